"""``convgen data export`` and ``convgen download``: dataset utilities."""

from __future__ import annotations

import argparse
import sys

from convgen.cli.common import command_group


def _cmd_download(args: argparse.Namespace) -> int:
    from convgen.data.download import download

    paths = download(args.dataset, args.root)
    for p in paths.values():
        print(p)
    return 0


def _cmd_data_export(args: argparse.Namespace) -> int:
    from convgen.data.export import export_images

    written = export_images(args.out, args.split, args.limit, args.overrides)
    print(f"wrote {written} images and labels.csv to {args.out}", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    desub = command_group(sub, "data", "dataset utilities")
    ex = desub.add_parser(
        "export",
        help="write a dataset split as PNG files + labels.csv",
        description="Export images of a dataset split (default: the bundled MNIST split) as "
        "PNGs, e.g. `convgen data export --split val --limit 16 --out digits/`. "
        "Choose another dataset with overrides: data.type=image-folder data.root=DIR.",
    )
    ex.add_argument("overrides", nargs="*", help="data.key=value settings of the dataset (default data.type=mnist)")
    ex.add_argument("--split", choices=["train", "val"], default="val")
    ex.add_argument("--limit", type=int, help="at most this many images (in split order)")
    ex.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    ex.set_defaults(func=_cmd_data_export)

    d = sub.add_parser("download", help="download a dataset with checksum verification (needs internet)")
    d.add_argument("dataset", choices=["mnist", "fashion-mnist", "cifar10"])
    d.add_argument("--root", required=True, help="folder to download into")
    d.set_defaults(func=_cmd_download)
