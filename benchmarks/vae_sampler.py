"""VAE sample quality against the size of the ex-post Gaussian mixture (FD-mnistcls: *not* a standard FID).

For each model and each ``--components K``: the model folder is copied, ``model.ex_post_components`` set to K and
the mixture refitted by the VAE task's ``finalize_export`` (what ``convgen train`` runs at export, same seed), then
``--n`` samples (seed 0, ``sampler="gmm"``) are scored against the 1,000 bundled validation digits as in
``gan_quality.py``; ``prior`` rows sample z ~ N(0, I). Prints one JSON object.

    python benchmarks/vae_sampler.py --model ours=mnist-vae --model reference=runs/vae-reference-15min \\
        --components 10 30 100 --n 5000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from _common import print_report
from gan_quality import evaluate_model

from convgen import modeldir
from convgen.data.datasets import build_data
from convgen.engine.runtime import DistInfo
from convgen.engine.task import Context
from convgen.metrics.extractors import get_extractor
from convgen.registry import TASKS


def refit(model: str, components: int, out: Path) -> Path:
    """A copy of ``model`` (zoo name, run or model folder) whose ex-post mixture has ``components`` Gaussians."""
    src = modeldir.resolve(model)
    shutil.copytree(src, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["model"]["ex_post_components"] = components
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    meta = json.loads((out / "meta.json").read_text())
    meta.setdefault("inference", {})["sampler"] = "gmm"
    meta.get("files", {}).pop("gmm.safetensors", None)
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    (out / "gmm.safetensors").unlink(missing_ok=True)
    saved = modeldir.open_model(out)
    task = TASKS.get("vae")(saved.cfg, build_data(saved.cfg.data), Context(torch.device("cpu"), DistInfo()), 1)
    task.finalize_export(out)
    modeldir.record_checksums(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, metavar="NAME=MODEL", help="VAE to evaluate")
    p.add_argument("--components", type=int, nargs="+", default=[10, 30])
    p.add_argument("--prior", action="store_true", help="also score prior samples")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--per-class", type=int, default=200)
    args = p.parse_args()
    extractor = get_extractor("mnist-classifier")
    data = build_data(modeldir.open_model("mnist-vae").cfg.data)
    x_real = data.val.batch(torch.arange(len(data.val)))[0]
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.model:
            label, _, model = spec.partition("=")
            rows = {}
            if args.prior:
                rows["prior"] = evaluate_model(model, args.n, args.per_class, extractor, x_real, sampler="prior")
            for k in args.components:
                copy = refit(model or label, k, Path(tmp) / f"{label}-{k}")
                rows[f"gmm-{k}"] = evaluate_model(str(copy), args.n, args.per_class, extractor, x_real)
            results[label] = rows
    real = "bundled MNIST val (1,000 digits)"
    print_report("vae_sampler", results, n=args.n, real=real, extractor="mnist-classifier")


if __name__ == "__main__":
    main()
