"""Speed and memory of `convgen eval generation` on MNIST-size image folders (the domain extractor).

Writes N "real" PNGs (the 8,000 bundled digits, repeated with 1-px shifts to reach N) and N "fake" PNGs (zoo
mnist-dcgan samples), then times the full evaluation (PNG decoding, features, FD, KID, IS, precision/recall,
density/coverage) in a fresh process per case, cold (no statistics cache) and warm (real features cached), and
records each process's peak resident memory. Side by side on the same features: the Fréchet distance by our
eigen-decomposition vs ``scipy.linalg.sqrtm`` (the pytorch-fid method), time and value.

    python benchmarks/eval_speed.py --n 10000 50000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import print_report


def write_sets(root: Path, n: int) -> tuple[Path, Path]:
    import convgen
    from convgen.config import load_config
    from convgen.data.datasets import build_data
    from convgen.io.images import write_image

    real, fake = root / f"real{n}", root / f"fake{n}"
    if real.is_dir() and len(list(real.iterdir())) == n:
        return real, fake
    real.mkdir(parents=True, exist_ok=True)
    fake.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[1]
    data = build_data(load_config(repo / "configs" / "classification" / "mnist-classifier.yaml").data)
    x = torch.cat([data.train.batch(torch.arange(len(data.train)))[0], data.val.batch(torch.arange(len(data.val)))[0]])
    shifts = [(0, 0), (0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, -1)]
    for i in range(n):
        dy, dx = shifts[(i // len(x)) % len(shifts)]
        img = torch.roll(x[i % len(x)], (dy, dx), (1, 2))
        write_image(real / f"{i:06d}.png", img.permute(1, 2, 0).numpy())
    gen = convgen.load("mnist-dcgan", device="cpu")
    for start in range(0, n, 5000):
        batch = gen.sample(min(5000, n - start), seed=start)
        for j, img in enumerate(batch):
            write_image(fake / f"{start + j:06d}.png", img.permute(1, 2, 0).numpy())
    return real, fake


def worker(real: str, fake: str, cache_dir: str) -> None:
    from convgen.metrics.distribution import evaluate_generation

    t = time.perf_counter()
    r = evaluate_generation(real, fake, "mnist-classifier", cache_dir=cache_dir)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    cached = r["protocol"]["real_features_cached"]
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "fid": r["fid"], "cached": cached}))


def frechet_side_by_side(real: Path, fake: Path) -> dict:
    import scipy.linalg

    from convgen.metrics import distribution as gm
    from convgen.metrics.extractors import folder_features, get_extractor

    ex = get_extractor("mnist-classifier")
    a, _ = folder_features(real, ex, limit=10000)
    b, _ = folder_features(fake, ex, limit=10000)
    t = time.perf_counter()
    ours = gm.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    covmean, _ = scipy.linalg.sqrtm(a.sigma @ b.sigma, disp=False)
    diff = a.mu - b.mu
    ref = float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean.real))
    t_ref = time.perf_counter() - t
    return {
        "feature_dim": int(a.features.shape[1]),
        "fd_ours": ours,
        "fd_scipy_sqrtm": ref,
        "relative_difference": abs(ours - ref) / abs(ref),
        "seconds_ours": t_ours,
        "seconds_scipy_sqrtm": t_ref,
        "speedup_vs_sqrtm": t_ref / t_ours,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[10000])
    p.add_argument("--root", help="where to write the image folders (default: a temporary directory)")
    p.add_argument("--worker", nargs=3, metavar=("REAL", "FAKE", "CACHE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    root = Path(args.root or tempfile.mkdtemp(prefix="convgen-eval-speed-"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    results = {}
    for n in args.n:
        real, fake = write_sets(root, n)
        cache = root / f"cache{n}"
        runs = {}
        for label in ("cold", "warm"):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", str(real), str(fake), str(cache)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            runs[label] = json.loads(out.stdout.strip().splitlines()[-1])
        results[str(n)] = runs
    print_report(
        "eval_speed",
        results,
        threads=torch.get_num_threads(),
        frechet_side_by_side=frechet_side_by_side(*write_sets(root, args.n[0])),
        protocol="N real vs N fake 28 px PNGs, `evaluate_generation(..., 'mnist-classifier')` in a fresh process; "
        "cold = no cached real features, warm = real features read from the statistics cache",
    )


if __name__ == "__main__":
    main()
