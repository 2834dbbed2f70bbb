"""Provenance records (issue 37): XMP with the IPTC digital source type and signed C2PA Content Credentials."""

import json
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from convgen.io import provenance as prov
from convgen.io.images import read_image, write_image
from convgen.io.provenance import IPTC, Provenance
from tests.conftest import cli

GENERATED = IPTC + "trainedAlgorithmicMedia"


@pytest.mark.parametrize("suffix", ["png", "jpg", "tif"])
def test_written_image_carries_xmp_and_a_valid_manifest(tmp_path, suffix):
    pixels = np.random.default_rng(0).random((24, 32, 3)).astype(np.float32)
    plain = write_image(tmp_path / f"plain.{suffix}", pixels)
    marked = write_image(tmp_path / f"marked.{suffix}", pixels, provenance=Provenance("generated", "m", "sample"))
    assert np.array_equal(read_image(plain), read_image(marked))  # the record changes no pixel
    report = prov.read(marked)
    assert report["xmp"] == {"digital_source_type": GENERATED, "creator_tool": f"convgen {prov.convgen_version()}",
                             "model": "m", "action": "sample"}  # fmt: skip
    c = report["c2pa"]
    assert c["validation_state"] == "Valid" and c["validation_errors"] == []
    assert c["digital_source_type"] == GENERATED and c["actions"] == ["c2pa.created"] and c["signed_here"]
    assert prov.read(plain) == {"file": plain.name, "format": report["format"], "xmp": {}, "c2pa": None}


def _insert_png_chunk(data: bytes, kind: bytes, payload: bytes) -> bytes:
    end = data.rindex(b"IEND") - 4
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return data[:end] + chunk + data[end:]


def test_a_changed_file_fails_validation(tmp_path):
    path = write_image(tmp_path / "a.png", np.full((16, 16), 0.5, np.float32), provenance=Provenance("generated", "m"))
    tampered = tmp_path / "b.png"
    tampered.write_bytes(_insert_png_chunk(path.read_bytes(), b"tEXt", b"Comment\x00edited"))
    c = prov.read(tampered)["c2pa"]
    assert c["validation_state"] == "Invalid" and any("mismatch" in code for code in c["validation_errors"])


def test_credentials_are_made_once_and_private(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVGEN_CONFIG", str(tmp_path / "cfg"))
    folder = prov.credentials_dir()
    assert folder == tmp_path / "cfg" / "c2pa" and not folder.exists()
    prov.ensure_credentials(folder)
    chain = (folder / "chain.pem").read_bytes()
    assert chain.count(b"BEGIN CERTIFICATE") == 2
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    prov.ensure_credentials(folder)  # already there: kept
    assert (folder / "chain.pem").read_bytes() == chain
    write_image(tmp_path / "x.png", np.zeros((8, 8), np.float32), provenance=Provenance("enhanced", "m"))
    c = prov.read(tmp_path / "x.png")["c2pa"]
    assert c["signed_here"] and c["digital_source_type"] == IPTC + "algorithmicallyEnhanced"
    monkeypatch.setenv("CONVGEN_CONFIG", str(tmp_path / "other"))  # another machine's reader
    assert not prov.read(tmp_path / "x.png")["c2pa"]["signed_here"]


def test_sample_marks_by_default_and_no_provenance_marks_nothing(tmp_path):
    r = cli("sample", "mnist-dcgan", "--n", "2", "--out", str(tmp_path / "s"), "--grid", str(tmp_path / "g.png"))
    assert r.returncode == 0, r.stderr
    for f in (tmp_path / "s" / "00000.png", tmp_path / "g.png"):
        shown = cli("provenance", "show", str(f), "--json")
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)
        assert report["xmp"]["digital_source_type"] == GENERATED and report["xmp"]["model"] == "mnist-dcgan"
        assert report["c2pa"]["validation_state"] == "Valid" and report["c2pa"]["digital_source_type"] == GENERATED
    r = cli("sample", "mnist-dcgan", "--n", "2", "--out", str(tmp_path / "n"), "--no-provenance")
    assert r.returncode == 0, r.stderr
    report = json.loads(cli("provenance", "show", str(tmp_path / "n" / "00000.png"), "--json").stdout)
    assert report["xmp"] == {} and report["c2pa"] is None
    assert np.array_equal(read_image(tmp_path / "s" / "00000.png"), read_image(tmp_path / "n" / "00000.png"))
    text = cli("provenance", "show", str(tmp_path / "s" / "00001.png")).stdout
    assert "trainedAlgorithmicMedia" in text and "C2PA: Valid" in text and "this machine" in text


def test_restoration_records_enhanced_and_inpainting_a_composite(tmp_path):
    from convgen import load

    img = np.random.default_rng(1).random((32, 32, 3)).astype(np.float32)
    write_image(tmp_path / "in.png", img)
    mask = np.zeros((32, 32), np.float32)
    mask[8:16, 8:16] = 1
    write_image(tmp_path / "mask.png", mask)
    load("denoise-color-blind").restore_files(tmp_path / "in.png", tmp_path / "den.png", sigma=10, ensemble=1)
    load("inpaint").restore_files(tmp_path / "in.png", tmp_path / "inp.png", mask=tmp_path / "mask.png")
    assert prov.read(tmp_path / "den.png")["xmp"]["digital_source_type"] == IPTC + "algorithmicallyEnhanced"
    composite = prov.read(tmp_path / "inp.png")
    assert composite["xmp"]["digital_source_type"] == IPTC + "compositeWithTrainedAlgorithmicMedia"
    assert composite["c2pa"]["actions"] == ["c2pa.created", "c2pa.edited"]
    assert composite["c2pa"]["validation_state"] == "Valid"


def test_show_refuses_what_is_not_an_image(tmp_path):
    (tmp_path / "t.png").write_text("not an image")
    for target in (tmp_path / "t.png", tmp_path / "missing.png"):
        r = cli("provenance", "show", str(target))
        assert r.returncode != 0 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_xmp_escapes_a_hostile_model_name():
    xml = Provenance("generated", 'a"><x:evil/>&', "sample").xmp()
    assert '<x:evil/>' not in xml and "&quot;&gt;&lt;x:evil/&gt;&amp;" in xml


def test_web_outputs_are_marked(tmp_path):
    from convgen import load
    from convgen.app import tools

    png = tools.sample_grid(load("mnist-dcgan"), 4, 0, None, {})
    (tmp_path / "g.png").write_bytes(png)
    assert prov.read(tmp_path / "g.png")["c2pa"]["validation_state"] == "Valid"
    frames = tools.interpolation_frames(load("mnist-dcgan"), 3, 0, "slerp", None, None)
    import base64

    (tmp_path / "f.png").write_bytes(base64.b64decode(frames[0].split(",", 1)[1]))
    assert prov.read(tmp_path / "f.png")["xmp"]["action"] == "interpolate"


def test_path_type_is_path():  # read() accepts str too
    assert isinstance(prov.credentials_dir(), Path) and os.environ["CONVGEN_CONFIG"]


def test_signing_that_cannot_happen_is_one_line_naming_the_way_out(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ENV_PYTHONPATH

    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = {**ENV_PYTHONPATH, "CONVGEN_CONFIG": str(blocker / "sub")}  # a folder that cannot be made
    args = [sys.executable, "-m", "convgen", "sample", "mnist-dcgan", "--n", "2", "--out", str(tmp_path / "s")]
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "--no-provenance" in r.stderr, r.stderr
    assert not list(tmp_path.rglob("*.png"))
