"""Learned-codec commands: ``compress`` (images -> ``.cvgc`` files) and ``decompress`` (``.cvgc`` -> PNG)."""

from __future__ import annotations

import argparse
import sys

from convgen.cli.common import add_option_flags, given_options


def _cmd_compress(args: argparse.Namespace) -> int:
    from convgen.pipelines import load
    from convgen.pipelines.codec import CodecPipeline

    pipe = load(args.model, device=args.device, expect=CodecPipeline, role="a codec")
    options = given_options(args, args.option_names)
    written = pipe.compress(args.input, args.output, overwrite=args.overwrite, **options)
    size = sum(p.stat().st_size for p in written)
    q = pipe.check_quality(options.get("quality"))
    print(f"compress: wrote {len(written)} file(s), {size:,} bytes, quality {q}, to {args.output}", file=sys.stderr)
    return 0


def _cmd_decompress(args: argparse.Namespace) -> int:
    from convgen.pipelines.codec import decompress

    written = decompress(args.input, args.output, model=args.model, overwrite=args.overwrite, device=args.device)
    print(f"decompress: wrote {len(written)} image(s) to {args.output}", file=sys.stderr)
    return 0


def add_commands(sub, with_options: bool = True) -> None:
    c = sub.add_parser(
        "compress",
        help="compress images with a learned codec (one .cvgc file per image)",
        description="IN may be an image file or a folder; each image becomes OUTPUT/<stem>.cvgc. Gray images are "
        "coded as gray, RGB as RGB. --quality picks the rate point (1 = smallest files).",
    )
    c.add_argument("model", help="zoo name (e.g. codec) or saved model directory")
    c.add_argument("--input", required=True, help="image file or folder")
    c.add_argument("--output", required=True, help="folder for the .cvgc files")
    c.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    c.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    declared = []
    if with_options:
        from convgen.pipelines.codec import CodecPipeline

        declared = [("codec models", CodecPipeline.compress_options)]
    c.set_defaults(func=_cmd_compress, option_names=add_option_flags(c, declared, "codec options"))
    d = sub.add_parser(
        "decompress",
        help="decode .cvgc files to PNG images",
        description="IN may be a .cvgc file or a folder of them; each becomes OUTPUT/<stem>.png. The model is "
        "found from the digest in each file's header among the installed zoo models, or given with --model.",
    )
    d.add_argument("--input", required=True, help=".cvgc file or folder")
    d.add_argument("--output", required=True, help="folder for the decoded PNGs")
    d.add_argument("--model", help="the codec that wrote the files (default: found from the header)")
    d.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    d.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    d.set_defaults(func=_cmd_decompress)
