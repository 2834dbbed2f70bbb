"""``convgen restore VERB MODEL``: every verb of every registered image-to-image pipeline.

The verbs come from the pipelines (``RestorePipeline.restores``), so a new family or a plugin adds its verbs
without an edit here; the options are passed through to the pipeline, which checks them.
"""

from __future__ import annotations

import argparse
import sys

from convgen.cli.common import command_group


def restore_verbs() -> dict[str, str]:
    """verb -> one-line help, over every registered pipeline that restores images."""
    from convgen.pipelines.restore import RestorePipeline
    from convgen.registry import PIPELINES

    verbs: dict[str, str] = {}
    for _, cls in PIPELINES.items():
        if isinstance(cls, type) and issubclass(cls, RestorePipeline):
            for verb in cls.restores:
                verbs.setdefault(verb, cls.verb_help.get(verb, f"restore images with a {verb} model"))
    return verbs


def _cmd_restore(args: argparse.Namespace) -> int:
    from convgen.pipelines import RestorePipeline, load

    pipe = load(args.model, device=args.device, expect=RestorePipeline, role="a restoration model")
    pipe.check_verb(args.verb, args.model)
    options = {"sigma": args.sigma, "tile": None if args.tile == 0 else args.tile, "overlap": args.overlap}
    for key in ("ensemble", "steps", "jump", "resample", "seed"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    options = {k: v for k, v in options.items() if v is not None or k == "tile"}
    written = pipe.restore_files(
        args.input, args.output, mask=args.mask, overwrite=args.overwrite, verb=args.verb, **options
    )
    print(f"{args.verb}: wrote {len(written)} image(s) to {args.output}", file=sys.stderr)
    return 0


def add_commands(sub, with_verbs: bool = True) -> None:
    """``with_verbs`` False lists the command without importing the pipelines (for other commands' start-up)."""
    rsub = command_group(sub, "restore", "denoise, inpaint, super-resolve or de-JPEG images")
    for verb, what in (restore_verbs() if with_verbs else {}).items():
        r = rsub.add_parser(
            verb,
            help=what,
            description=f"{what[0].upper()}{what[1:]}. IN/OUT may be files or folders (outputs keep the input "
            "file names; .npy in gives .npy float out of the same shape). Large images are restored in "
            "overlapping tiles.",
        )
        r.add_argument("model", help="zoo name (e.g. denoise-gray-s25) or saved model directory")
        r.add_argument("--input", required=True, help="image file or folder (PNG/JPEG/TIFF/.npy)")
        r.add_argument("--output", required=True, help="output file or folder")
        r.add_argument("--sigma", type=float, help="noise standard deviation on the 0-255 scale (denoise)")
        r.add_argument("--mask", help="mask file or folder of masks named like the inputs (inpaint)")
        r.add_argument("--tile", type=int, default=512, help="tile size in pixels for large images (0 = no tiling)")
        r.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels")
        r.add_argument(
            "--ensemble",
            type=int,
            choices=[1, 2, 4, 8],
            help="average the model over this many flips/rotations (x time; default: the model's own setting, "
            "8 for denoise-color-blind, else 1)",
        )
        r.add_argument("--steps", type=int, help="diffusion models: reverse-process steps")
        r.add_argument("--jump", type=int, help="diffusion inpainting: RePaint jump length (levels)")
        r.add_argument("--resample", type=int, help="diffusion inpainting: RePaint resamplings per jump")
        r.add_argument("--seed", type=int, help="diffusion models: the noise seed (default 0)")
        r.add_argument("--overwrite", action="store_true", help="replace existing output files")
        r.add_argument("--device", default="auto")
        r.set_defaults(func=_cmd_restore, verb=verb)
