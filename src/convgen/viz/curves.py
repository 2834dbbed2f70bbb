"""Training curves from a run's ``metrics.jsonl``."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from convgen.io.atomic import atomic_write


def read_metrics(path: str | Path) -> list[dict]:
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a killed run
    return records


def plot_curves(metrics_path: str | Path, out_path: str | Path) -> Path:
    """One panel per metric family (``train/loss`` and ``val/loss`` share the ``loss`` panel), against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, tuple[list[int], list[float]]]] = defaultdict(dict)
    for rec in read_metrics(metrics_path):
        step = rec.get("step")
        for key, value in rec.items():
            if "/" not in key or not isinstance(value, (int, float)) or key.endswith(("/lr", "_per_s")):
                continue
            split, metric = key.split("/", 1)
            xs, ys = series[metric].setdefault(split, ([], []))
            xs.append(step)
            ys.append(value)
    names = sorted(series)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.5 * max(1, len(names)), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        for split, (xs, ys) in sorted(series[name].items()):
            ax.plot(xs, ys, label=split, marker="o" if len(xs) < 30 else None, markersize=3)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = atomic_write(out_path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return out
