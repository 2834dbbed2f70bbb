"""``convgen watermark embed|detect``: convgen's learned invisible watermark on any colour image."""

from __future__ import annotations

import argparse
import json

from convgen.cli.common import add_option_flags, command_group, given_options


def _pipe(args: argparse.Namespace):
    from convgen.pipelines import load
    from convgen.pipelines.watermark import WatermarkPipeline

    return load(args.model, device=args.device, expect=WatermarkPipeline, role="a watermark model")


def _cmd_embed(args: argparse.Namespace) -> int:
    import sys

    pipe = _pipe(args)
    written = pipe.embed_files(args.input, args.output, overwrite=args.overwrite,
                               **given_options(args, args.option_names))  # fmt: skip
    print(f"watermark: marked {len(written)} image(s) into {args.output}", file=sys.stderr)
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    pipe = _pipe(args)
    results = pipe.detect_files(args.input)
    if args.json:
        print(json.dumps({"results": {k: v.to_json() for k, v in results.items()}, "threshold": pipe.threshold()}))
        return 0
    for name, d in results.items():
        verdict = f"marked, payload {d.payload}" if d.detected else "no convgen watermark"
        print(f"{name}: {verdict} (p-value {d.p_value:.2g}, {d.agreeing_pairs}/32 pairs agree)")
    return 0


def add_commands(sub, with_options: bool = True) -> None:
    group = command_group(sub, "watermark", "embed or detect convgen's invisible watermark")
    e = group.add_parser(
        "embed",
        help="mark colour images with a 32-bit payload",
        description="Adds convgen's learned invisible watermark (zoo model `watermark`) to each image of IN (a file "
        "or folder, at least 128 px a side, colour) and writes it to OUT (outputs keep the input names; lossy inputs "
        "become PNG). The mark survives JPEG, resizing, crops, blur, noise and colour changes (see the model card).",
    )
    e.add_argument("--input", required=True, help="image file or folder")
    e.add_argument("--output", required=True, help="output file or folder")
    e.add_argument("--model", default="watermark", help="watermark model: zoo name or saved model directory")
    e.add_argument("--overwrite", action="store_true", help="replace existing output files")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    names: tuple[str, ...] = ()
    if with_options:
        from convgen.pipelines.watermark import WatermarkPipeline

        names = add_option_flags(e, [("watermark embed", WatermarkPipeline.embed_options)], "watermark options")
    e.set_defaults(func=_cmd_embed, option_names=names)
    d = group.add_parser(
        "detect",
        help="say whether images carry convgen's watermark, and its payload",
        description="Reads the watermark of each image of IN. An image is reported as marked when the p-value of "
        "its reading under 'no watermark' (the decoder's bits as fair coins) is below 1e-4; the false-positive rate "
        "measured on unmarked photos is in the watermark model card.",
    )
    d.add_argument("--input", required=True, help="image file or folder")
    d.add_argument("--model", default="watermark", help="watermark model: zoo name or saved model directory")
    d.add_argument("--json", action="store_true",
                   help='print {"results": {name: {detected, payload, bit_accuracy, p_value}}, "threshold": {...}}')
    d.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    d.set_defaults(func=_cmd_detect)
