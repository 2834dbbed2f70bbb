"""Write a dataset split to disk as PNG files (for trying `convgen classify`, or for external tools)."""

from __future__ import annotations

from pathlib import Path

import torch

from convgen.config import apply_overrides, build_typed
from convgen.data.datasets import build_data
from convgen.errors import ConvgenError
from convgen.io.atomic import atomic_write_text
from convgen.io.images import write_image
from convgen.registry import DATASETS


def export_images(
    out: str | Path, split: str = "val", limit: int | None = None, overrides: list[str] | None = None
) -> int:
    """Write ``split`` of the dataset given by ``data.*`` overrides (default: bundled MNIST) as ``00000.png``...

    A ``labels.csv`` (file,label) is written beside the images when the data is labelled. Returns the count.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConvgenError(f"{out} is a file; `out` is the folder the images go in")
    if out.exists() and any(out.iterdir()):
        raise ConvgenError(f"{out} already exists and is not empty; choose another `out`")
    if limit is not None and limit < 1:
        raise ConvgenError("`limit` must be >= 1")
    for text in overrides or []:
        if not text.startswith("data."):
            raise ConvgenError(f"override {text!r}: only data.* settings apply to an export")
    raw = apply_overrides({"data": {"type": "mnist", "val_count": 1000}}, overrides or [])
    data = build_data(build_typed("data", raw["data"], DATASETS))
    dataset = data.train if split == "train" else data.val
    if dataset is None:
        raise ConvgenError("this dataset has no validation split (set data.val_count or data.val_fraction)")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    x, y = dataset.batch(torch.arange(n))
    out.mkdir(parents=True, exist_ok=True)
    rows = ["file,label"]
    for i in range(n):
        write_image(out / f"{i:05d}.png", x[i].permute(1, 2, 0).numpy())
        if y is not None:
            rows.append(f"{i:05d}.png,{int(y[i])}")
    if y is not None:
        atomic_write_text(out / "labels.csv", "\n".join(rows) + "\n")
    return n
