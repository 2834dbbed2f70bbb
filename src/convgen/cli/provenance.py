"""``convgen provenance show``: what an image records about its origin (XMP, C2PA Content Credentials)."""

from __future__ import annotations

import argparse
import json

from convgen.cli.common import command_group


def _cmd_show(args: argparse.Namespace) -> int:
    from convgen.io.provenance import c2pa_available
    from convgen.pipelines.watermark import provenance_report

    report = provenance_report(args.file)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['file']} ({report['format']})")
    xmp = report["xmp"]
    if xmp:
        print("  XMP:")
        for key, value in xmp.items():
            print(f"    {key}: {value}")
    else:
        print("  XMP: none (no IPTC digital source type)")
    w = report["watermark"]
    if w is None:
        print("  watermark: not checked (a grey image, or no watermark model installed)")
    elif w["detected"]:
        print(f"  watermark: convgen mark, payload {w['payload']} (p-value {w['p_value']:.2g})")
    else:
        print(f"  watermark: none found (p-value {w['p_value']:.2g})")
    c = report["c2pa"]
    if c is None:
        print("  C2PA: no manifest" + ("" if c2pa_available() else " (c2pa-python is not installed: not checked)"))
        return 0
    state = c["validation_state"] + (f", errors: {', '.join(c['validation_errors'])}" if c["validation_errors"] else "")
    print(f"  C2PA: {state}")
    print(f"    digital source type: {c['digital_source_type']}")
    print(f"    actions: {', '.join(a for a in c['actions'] if a)}")
    print(f"    claim generator: {', '.join(c['claim_generator'])}")
    here = " (this machine's convgen credentials)" if c["signed_here"] else ""
    print(f"    signed by: {c['signer']} / {c['signer_issuer']}{here}")
    return 0


def add_commands(sub) -> None:
    group = command_group(sub, "provenance", "show what an image records about its origin (XMP, C2PA)")
    s = group.add_parser(
        "show",
        help="print an image's provenance record",
        description="The IPTC digital source type and convgen fields of the image's XMP, the verdict of convgen's "
        "invisible watermark (zoo model `watermark`), and its C2PA manifest: "
        "validation state (Valid: the signature and the pixels' hash check out; a credential made on this "
        "machine is never Trusted), digital source type, actions, generator and signer.",
    )
    s.add_argument("file", help="a PNG, JPEG or TIFF image")
    s.add_argument("--json", action="store_true", help='print {"file", "format", "xmp": {...}, "c2pa": {...}|null, '
                   '"watermark": {detected, payload, bit_accuracy, p_value}|null}')
    s.set_defaults(func=_cmd_show)
