"""Provenance records in the images convgen writes: IPTC digital source type in XMP, and a signed C2PA manifest.

Every generated image says so in two machine-readable ways (EU AI Act Art. 50(2); the IPTC and C2PA conventions
that cameras, Adobe tools and the major platforms read):

* **XMP** (a PNG ``iTXt`` chunk ``XML:com.adobe.xmp``, a JPEG APP1 segment, TIFF tag 700): the IPTC
  ``Iptc4xmpExt:DigitalSourceType`` (``trainedAlgorithmicMedia`` for generated pictures,
  ``compositeWithTrainedAlgorithmicMedia`` for photos with generated regions, ``algorithmicallyEnhanced`` for
  restored ones), ``xmp:CreatorTool`` (convgen and its version) and ``convgen:Model``.
* **C2PA Content Credentials** (with ``c2pa-python``): a manifest with a ``c2pa.actions`` assertion carrying the
  same digital source type, signed with a key and certificate made on first use on this machine (an EC P-256 key
  under a local root, in :func:`credentials_dir`). Such a self-made credential proves that the file has not changed
  since this machine's convgen signed it, and what convgen recorded; it does not prove who ran it: no public
  authority vouches for the local root, so C2PA readers report the signer as untrusted (``Valid``, not
  ``Trusted``). Put a certificate from a C2PA-trusted authority in that folder for that.

Metadata is removed by any re-encode or screenshot; the invisible watermark (issue 37) is what survives that.
"""

from __future__ import annotations

import datetime
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape

from convgen.errors import ConvgenError

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
SOURCE_TYPES = {
    "generated": "trainedAlgorithmicMedia",
    "composite": "compositeWithTrainedAlgorithmicMedia",
    "enhanced": "algorithmicallyEnhanced",
}
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "TIFF": "image/tiff"}
XMP_KEY = "XML:com.adobe.xmp"


def convgen_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("convgen")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class Provenance:
    """What an output image records about how it was made: ``kind`` (generated, composite: a photo with generated
    regions, enhanced: a restored photo), the ``model`` and what was done (``verb``: sample, stylize, ...)."""

    kind: Literal["generated", "composite", "enhanced"]
    model: str
    verb: str = ""
    sign: bool = True  # add a C2PA manifest (when c2pa-python is installed)
    #: the invisible watermark: 8-bit pixels -> (marked pixels, what the XMP records about the mark); None: no mark
    mark: Callable | None = field(default=None, compare=False, repr=False)
    watermark: str = ""  # what was marked (set by :meth:`apply_mark`)

    def apply_mark(self, pixels):
        """``pixels`` with the watermark (if this record has a marker) and the record that says so."""
        if self.mark is None:
            return pixels, self
        marked, note = self.mark(pixels)
        return marked, replace(self, mark=None, watermark=note)

    @property
    def source_type(self) -> str:
        return IPTC + SOURCE_TYPES[self.kind]

    @property
    def tool(self) -> str:
        return f"convgen {convgen_version()}"

    def xmp(self) -> str:
        """An XMP packet with the IPTC digital source type, the creator tool and the model."""
        model, verb = escape(self.model[:200], {'"': "&quot;"}), escape(self.verb[:40], {'"': "&quot;"})
        return (
            '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
            ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
            '  <rdf:Description rdf:about=""\n'
            '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
            '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
            '    xmlns:convgen="https://github.com/convgen/convgen/ns/1.0/"\n'
            f'    Iptc4xmpExt:DigitalSourceType="{self.source_type}"\n'
            f'    xmp:CreatorTool="{escape(self.tool)}"\n'
            f'    convgen:Model="{model}"\n'
            f'    convgen:Action="{verb}"'
            + (f'\n    convgen:Watermark="{escape(self.watermark[:80])}"' if self.watermark else "")
            + "/>\n"
            " </rdf:RDF>\n"
            "</x:xmpmeta>\n"
            '<?xpacket end="w"?>'
        )

    def manifest(self, title: str, fmt: str) -> dict:
        """The C2PA manifest definition: a ``c2pa.created`` action with the digital source type (a manifest's first
        action must create or open), followed for a restored or inpainted picture by ``c2pa.edited``."""
        agent = {"name": "convgen", "version": convgen_version()}
        params = {"model": self.model[:200], "verb": self.verb[:40]}
        if self.watermark:
            params["watermark"] = self.watermark[:80]
        actions = [{"action": "c2pa.created", "digitalSourceType": self.source_type, "softwareAgent": agent,
                    "parameters": params}]  # fmt: skip
        if self.kind != "generated":
            actions.append({"action": "c2pa.edited", "softwareAgent": agent, "parameters": params})
        return {
            "claim_generator_info": [{"name": "convgen", "version": convgen_version()}],
            "title": title,
            "format": MIME[fmt],
            "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}],
        }


def c2pa_available() -> bool:
    try:
        import c2pa  # noqa: F401
        import cryptography  # noqa: F401
    except ImportError:
        return False
    return True


def credentials_dir() -> Path:
    """Where the signing key and certificates live: ``$CONVGEN_CONFIG/c2pa``, else ``~/.config/convgen/c2pa``."""
    base = os.environ.get("CONVGEN_CONFIG") or (Path.home() / ".config" / "convgen")
    return Path(base) / "c2pa"


def _make_credentials(folder: Path) -> None:
    """An EC P-256 root and a signing certificate under it (10 years), the key readable by the user only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "convgen (self-made on this machine)")
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), org])

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=not sign, crl_sign=not sign,
                             encipher_only=False, decipher_only=False)  # fmt: skip

    now = datetime.datetime.now(datetime.timezone.utc)
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject: str, issuer: x509.Name, public, signing_key, sign: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer).public_key(public)
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=3650))
             .add_extension(x509.BasicConstraints(ca=not sign, path_length=0 if not sign else None), critical=True)
             .add_extension(usage(sign), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))  # fmt: skip
        if sign:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False)
        return b.sign(signing_key, hashes.SHA256())

    root = cert("convgen local root", name("convgen local root"), root_key.public_key(), root_key, sign=False)
    leaf = cert("convgen local signer", root.subject, key.public_key(), root_key, sign=True)
    pem = serialization.Encoding.PEM
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (folder / "signer.key").write_bytes(private)
    (folder / "root.pem").write_bytes(root.public_bytes(pem))
    (folder / "chain.pem").write_bytes(leaf.public_bytes(pem) + root.public_bytes(pem))


def ensure_credentials(path: Path) -> Path:
    """The credentials folder, made on first use: written in a private (0700) temporary folder and renamed into
    place in one step, so that two processes starting at once never see half a set (the loser's set is dropped)."""
    import shutil
    import tempfile

    if (path / "chain.pem").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".c2pa-", dir=path.parent))  # mode 0700
    try:
        _make_credentials(tmp)
        os.rename(tmp, path)
    except OSError:
        if not (path / "chain.pem").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


@lru_cache(maxsize=4)
def _signer(folder: str):
    import c2pa

    path = ensure_credentials(Path(folder))
    chain, key = (path / "chain.pem").read_bytes(), (path / "signer.key").read_bytes()
    info = c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain, private_key=key, ta_url=None)
    return c2pa.Signer.from_info(info)


@lru_cache(maxsize=1)
def _context():
    import c2pa

    return c2pa.Context(c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}}))


def sign(data: bytes, fmt: str, title: str, provenance: Provenance) -> bytes:
    """``data`` (an encoded PNG/JPEG/TIFF) with a C2PA manifest signed by this machine's credentials."""
    import c2pa

    try:
        signer = _signer(str(credentials_dir()))
        builder = c2pa.Builder(json.dumps(provenance.manifest(title, fmt)), context=_context())
        out = io.BytesIO()
        builder.sign(signer, MIME[fmt], io.BytesIO(data), out)
    except (c2pa.C2paError, OSError, ValueError) as e:
        raise ConvgenError(f"{title}: could not sign its Content Credentials ({e}); use --no-provenance") from None
    return out.getvalue()


def read(path: str | Path) -> dict:
    """What a file says about its origin: ``{"xmp": {...}, "c2pa": {...} | None}`` (``c2pa`` has the validation
    state, the digital source type and action of the active manifest, the signer, and whether this machine's
    credentials signed it)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ConvgenError(f"{path}: file not found")
    try:
        with Image.open(path) as im:
            xmp = _xmp_fields(_xmp_text(im))
            fmt = im.format
    except OSError as e:
        raise ConvgenError(f"{path.name}: not an image ({e})") from None
    return {"file": path.name, "format": fmt, "xmp": xmp, "c2pa": read_c2pa(path.read_bytes(), fmt)}


def _xmp_text(im) -> str:
    raw = im.info.get(XMP_KEY) or im.info.get("xmp") or ""
    if not raw and getattr(im, "tag_v2", None) is not None:
        raw = im.tag_v2.get(700, b"")
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _xmp_fields(text: str) -> dict:
    import re

    fields = {}
    for key, label in (("Iptc4xmpExt:DigitalSourceType", "digital_source_type"), ("xmp:CreatorTool", "creator_tool"),
                       ("convgen:Model", "model"), ("convgen:Action", "action"),
                       ("convgen:Watermark", "watermark")):  # fmt: skip
        m = re.search(rf'{key}="([^"]*)"', text) or re.search(rf"<{key}>([^<]*)</{key}>", text)
        if m:
            fields[label] = m.group(1)
    return fields


def read_c2pa(data: bytes, fmt: str | None) -> dict | None:
    """The active C2PA manifest of an encoded image, summarised; None when it has none (or c2pa-python is
    missing)."""
    if fmt not in MIME or not c2pa_available():
        return None
    import c2pa

    try:
        reader = c2pa.Reader(MIME[fmt], io.BytesIO(data), context=_context())
        store = json.loads(reader.json())
        state = reader.get_validation_state()
    except c2pa.C2paError:
        return None
    manifest = store.get("manifests", {}).get(store.get("active_manifest") or "", {})
    actions = [a for item in manifest.get("assertions", []) if item.get("label", "").startswith("c2pa.actions")
               for a in item.get("data", {}).get("actions", [])]  # fmt: skip
    sig = manifest.get("signature_info", {})
    local = (credentials_dir() / "chain.pem").is_file() and sig.get("cert_serial_number") == _local_serial()
    return {
        "validation_state": str(state),
        "validation_errors": [
            s.get("code") for s in store.get("validation_status", []) if s.get("code") != "signingCredential.untrusted"
        ],  # fmt: skip
        "digital_source_type": next((a["digitalSourceType"] for a in actions if "digitalSourceType" in a), None),
        "actions": [a.get("action") for a in actions],
        "claim_generator": [
            g.get("name", "") + " " + g.get("version", "") for g in manifest.get("claim_generator_info", [])
        ],  # fmt: skip
        "signer": sig.get("common_name"),
        "signer_issuer": sig.get("issuer"),
        "signed_here": bool(local),
    }


def _local_serial() -> str | None:
    from cryptography import x509

    chain = (credentials_dir() / "chain.pem").read_bytes()
    return str(x509.load_pem_x509_certificates(chain)[0].serial_number)
