"""``convgen sample`` and ``convgen interpolate``: every generator, through the Sampler API."""

from __future__ import annotations

import argparse
import sys

from convgen.cli.common import add_option_flags, add_provenance_flag, given_options


def _sampler(model: str, device: str):
    from convgen.pipelines import Sampler, load

    return load(model, device=device, expect=Sampler, role="a generator")


def sampler_families(attribute: str) -> list[tuple[str, type]]:
    """[(pipeline name, its declared ``sample_options`` / ``walk_options``), ...] over every registered generator."""
    from convgen.pipelines.sample import Sampler
    from convgen.registry import PIPELINES

    return [(f"{name} models", getattr(cls, attribute)) for name, cls in PIPELINES.items()
            if isinstance(cls, type) and issubclass(cls, Sampler)]  # fmt: skip


def _cmd_sample(args: argparse.Namespace) -> int:
    pipe = _sampler(args.model, args.device)
    options = given_options(args, args.option_names)
    written = pipe.save_samples(
        args.out, args.n, args.per_class, args.seed, args.classes, args.batch_size, args.grid, args.overwrite,
        provenance=args.provenance, **options,
    )  # fmt: skip
    print(f"wrote {written} images to {args.out}", file=sys.stderr)
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from convgen.pipelines.sample import save_interpolation

    pipe = _sampler(args.model, args.device)
    classes = tuple(args.classes) if args.classes else None
    options = given_options(args, args.option_names)
    images = pipe.interpolate(args.steps, args.rows, args.seed, args.mode, classes, args.class_, **options)
    record = pipe.provenance("interpolate") if args.provenance else None
    save_interpolation(images, args.steps, args.out, args.gif, overwrite=args.overwrite, provenance=record)
    print(f"wrote {args.out}" + (f" and {args.gif}" if args.gif else ""), file=sys.stderr)
    return 0


def add_commands(sub, with_families: bool = True) -> None:
    """``with_families`` False lists the commands without the models' own options (no pipeline import)."""
    sm = sub.add_parser(
        "sample",
        help="generate images with a generator model",
        description="Write DIR/00000.png ... (--n N), or DIR/<class>/00000.png ... for every class of a conditional "
        "model (--per-class K). The same --seed gives the same images. The model options below are the models' "
        "own: each says which kind of model takes it.",
    )
    sm.add_argument("model", help="zoo name (e.g. mnist-dcgan, mnist-cgan) or saved model directory")
    how = sm.add_mutually_exclusive_group(required=True)
    how.add_argument("--n", type=int, help="number of images")
    how.add_argument("--per-class", type=int, help="images per class (conditional models)")
    sm.add_argument("--class", dest="classes", action="append", help="only this class (repeatable; with --n)")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    sm.add_argument("--grid", help="also write a preview grid PNG here")
    sm.add_argument("--overwrite", action="store_true", help="replace an existing --grid file")
    add_provenance_flag(sm)
    sm.add_argument("--batch-size", type=int, default=500)
    sm.add_argument("--device", default="auto")
    names = add_option_flags(sm, sampler_families("sample_options") if with_families else [])
    sm.set_defaults(func=_cmd_sample, option_names=names)

    ip = sub.add_parser(
        "interpolate",
        help="latent or class interpolation strips and GIFs",
        description="Each row walks from one random latent to another (spherical by default); with --classes A B "
        "a conditional model keeps the latent and walks from class A's embedding to class B's.",
    )
    ip.add_argument("model")
    ip.add_argument("--out", required=True, help="PNG strip (rows x steps)")
    ip.add_argument("--gif", help="also write an animated GIF")
    ip.add_argument("--overwrite", action="store_true", help="replace existing --out / --gif files")
    add_provenance_flag(ip)
    ip.add_argument("--steps", type=int, default=10)
    ip.add_argument("--rows", type=int, default=4)
    ip.add_argument("--seed", type=int, default=0)
    ip.add_argument("--mode", choices=["slerp", "lerp"], default="slerp")
    ip.add_argument("--classes", nargs=2, metavar=("FROM", "TO"), help="class interpolation (conditional models)")
    ip.add_argument("--class", dest="class_", help="class of a latent walk (conditional models)")
    ip.add_argument("--device", default="auto")
    names = add_option_flags(ip, sampler_families("walk_options") if with_families else [])
    ip.set_defaults(func=_cmd_interpolate, option_names=names)
