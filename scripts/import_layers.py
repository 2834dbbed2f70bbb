"""Draw the import layers of src/convgen as docs/import_layers.png, from the code's own imports.

    python scripts/import_layers.py [--out docs/import_layers.png]

The layers and the graph are those that tests/test_architecture.py checks (no circles, nothing imports upward):
one row per layer, one box per package or module, an arrow for every package that imports another (from the
lower edge of the importer to the upper edge of what it imports; arrows into ``errors``, which nearly every module
uses, are left out).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.test_architecture import LAYERS, graph, layer  # noqa: E402


def group(module: str) -> str:
    """A module's box: its subpackage under convgen (``convgen.data.degradations`` -> ``data``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "convgen (API)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "import_layers.png")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = graph()
    boxes: dict[int, set[str]] = defaultdict(set)
    for m in g:
        boxes[layer(m)].add(group(m))
    edges = {(group(a), group(b)) for a, targets in g.items() for b in targets if group(a) != group(b)}
    edges = {(a, b) for a, b in edges if b != "errors"}  # nearly every module raises convgen's errors
    pos: dict[str, tuple[float, float]] = {}
    fig, ax = plt.subplots(figsize=(13, 8))
    for level in range(len(LAYERS)):
        names = sorted(boxes[level])
        for i, name in enumerate(names):
            x, y = (i + 0.5) / len(names), level
            pos[name] = (x, y)
            ax.add_patch(plt.Rectangle((x - 0.07, y - 0.18), 0.14, 0.36, fc="#dbe7f3", ec="#35608a", lw=1.2))
            is_package = (REPO / "src" / "convgen" / name).is_dir()
            ax.text(x, y, name + ("/" if is_package else ""), ha="center", va="center", fontsize=10)
        ax.text(-0.04, level, f"layer {level}", ha="right", va="center", fontsize=9, color="#555")
    for a, b in sorted(edges):
        (xa, ya), (xb, yb) = pos[a], pos[b]
        ax.annotate("", xy=(xb, yb + 0.18), xytext=(xa, ya - 0.18),
                    arrowprops={"arrowstyle": "->", "color": "#8a8a8a", "lw": 0.7, "alpha": 0.7})  # fmt: skip
    ax.set_xlim(-0.12, 1.02)
    ax.set_ylim(-0.6, len(LAYERS) - 0.4)
    ax.axis("off")
    ax.set_title(
        "convgen import layers: every arrow points down or stays in its layer; no circles (errors: used by all)",
        fontsize=12,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
