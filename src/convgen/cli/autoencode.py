"""``convgen reconstruct MODEL``: encode and decode images with a (variational) autoencoder."""

from __future__ import annotations

import argparse
import sys


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from convgen.pipelines import RestorePipeline, load

    pipe = load(args.model, device=args.device, expect=RestorePipeline, role="an autoencoder")
    written = pipe.restore_files(args.input, args.output, overwrite=args.overwrite, verb="reconstruct")
    print(f"reconstruct: wrote {len(written)} image(s) to {args.output}", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    r = sub.add_parser(
        "reconstruct",
        help="reconstruct images with an autoencoder or VAE (the decoder's mean)",
        description="IN/OUT may be files or folders, with the naming rules of `convgen restore` (.npy in gives "
        ".npy float out of the same shape). Images must have the model's size and channels.",
    )
    r.add_argument("model", help="zoo name (e.g. mnist-vae) or saved model directory")
    r.add_argument("--input", required=True, help="image file or folder")
    r.add_argument("--output", required=True, help="output file or folder")
    r.add_argument("--overwrite", action="store_true", help="replace existing output files")
    r.add_argument("--device", default="auto")
    r.set_defaults(func=_cmd_reconstruct)
