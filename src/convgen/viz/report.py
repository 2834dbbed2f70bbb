"""``convgen report RUN_DIR``: one self-contained HTML page about a training run.

It holds the run's summary (steps, best checkpoint, final and best validation metrics), its learning curves, every
picture the run wrote (sample grids, restorations, predictions), the networks with their parameter counts, the
model card when there is one, and the full configuration. Images are embedded, so the file can be mailed or
attached to an issue on its own.
"""

from __future__ import annotations

import base64
import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from convgen.errors import ConvgenError

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img{max-width:100%;image-rendering:pixelated;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(path.name)}</figcaption></figure>"
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.5g}"
    return html.escape(str(v))


def _metrics_table(rows: list[dict]) -> str:
    """Final value, best value and step of every validation metric (higher is better unless named loss/fd/fid)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        for k, v in r.items():
            if k.startswith("val/") and isinstance(v, (int, float)):
                series.setdefault(k, []).append((int(r.get("step", 0)), float(v)))
    if not series:
        return "<p>No validation metrics were logged.</p>"
    out = ["<table><tr><th>metric</th><th>last</th><th>at step</th><th>best</th><th>at step</th></tr>"]
    for k, values in sorted(series.items()):
        lower = any(t in k for t in ("loss", "fd", "fid", "kid"))
        best = min(values, key=lambda sv: sv[1]) if lower else max(values, key=lambda sv: sv[1])
        last = values[-1]
        out.append(
            f"<tr><td>{html.escape(k)}</td><td>{_fmt(last[1])}</td><td>{last[0]}</td>"
            f"<td>{_fmt(best[1])}</td><td>{best[0]}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _networks(model_dir: Path) -> str:
    from safetensors import safe_open

    rows = []
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            n = sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())  # noqa: SIM118 - not a dict
        rows.append(f"<tr><td>{html.escape(f.stem)}</td><td>{n:,}</td><td>{f.stat().st_size / 2**20:.1f} MiB</td></tr>")
    if not rows:
        return "<p>No exported weights.</p>"
    return "<table><tr><th>network</th><th>parameters</th><th>file</th></tr>" + "".join(rows) + "</table>"


def build_report(run_dir: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write the HTML report of ``run_dir`` (default ``RUN_DIR/report.html``) atomically; returns its path."""
    from convgen.io.atomic import atomic_write_text, refuse_existing
    from convgen.viz.curves import plot_curves, read_metrics

    run = Path(run_dir)
    if not run.is_dir():
        raise ConvgenError(f"{run}: run directory not found")
    config_path = run / "config.json"
    if not config_path.is_file():
        raise ConvgenError(f"{run}: not a run or model directory (no config.json)")
    out = Path(out) if out else run / "report.html"
    refuse_existing([out], overwrite)
    config = json.loads(config_path.read_text())
    model_dir = run / "model" if (run / "model" / "config.json").is_file() else run
    meta_path = model_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    rows = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
    if rows and not (run / "curves.png").is_file():
        plot_curves(run / "metrics.jsonl", run / "curves.png")
    pictures = sorted(p for p in run.glob("*.png"))
    train_rows = [r for r in rows if "train/images_per_s" in r]
    summary = {
        "name": config.get("name", run.name),
        "task": config.get("task", {}).get("type"),
        "model": config.get("model", {}).get("type"),
        "dataset": config.get("data", {}).get("type"),
        "steps": meta.get("step", rows[-1].get("step") if rows else None),
        "best checkpoint": f"{meta.get('best_metric')} = {_fmt(meta.get('best_value'))}"
        if meta.get("best_metric")
        else None,
        "exported from": meta.get("exported_from"),
        "throughput": f"{train_rows[-1]['train/images_per_s']:.1f} images/s" if train_rows else None,
    }
    card = model_dir / "MODEL_CARD.md"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>convgen report: {html.escape(str(summary['name']))}</title><style>{_CSS}</style></head><body>",
        f"<h1>convgen report: {html.escape(str(summary['name']))}</h1>",
        f"<p>{html.escape(str(run.resolve()))} &middot; generated "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</p>",
        "<h2>Summary</h2><table>",
        *(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in summary.items() if v is not None),
        "</table>",
        "<h2>Validation metrics</h2>",
        _metrics_table(rows),
        "<h2>Pictures</h2>",
        "".join(_img(p) for p in pictures) or "<p>No pictures.</p>",
        "<h2>Networks</h2>",
        _networks(model_dir),
    ]
    if card.is_file():
        parts += ["<h2>Model card</h2>", f"<pre>{html.escape(card.read_text())}</pre>"]
    parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(json.dumps(config, indent=2))}</pre>", "</body></html>"]
    atomic_write_text(out, "\n".join(parts))
    return out
