"""Figures a user looks at after a run: labelled predictions, confusion matrices."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from convgen.io.atomic import atomic_write


def plot_predictions(
    images: torch.Tensor, predicted: torch.Tensor, truth: torch.Tensor | None, class_names: list[str], path: str | Path
) -> Path:
    """A grid of images titled with their predicted class (red when wrong)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    cols = min(8, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.6 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].permute(1, 2, 0).clamp(0, 1).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        p = int(predicted[i])
        wrong = truth is not None and int(truth[i]) != p
        label = class_names[p] if p < len(class_names) else str(p)
        ax.set_title(
            label + (f" (true {class_names[int(truth[i])]})" if wrong else ""),
            fontsize=8,
            color="red" if wrong else "black",
        )
    fig.tight_layout()
    out = atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return out
