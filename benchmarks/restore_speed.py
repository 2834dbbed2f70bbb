"""Restoration speed and memory: seconds for one 481x321 image, and peak memory of a tiled 4000x3000 image.

Each measurement runs in a fresh subprocess (so peak RSS is that run's alone) through the real CLI path
(`convgen restore denoise`), and also times the in-process `pipe.restore` call without file I/O.

    python benchmarks/restore_speed.py --model denoise-gray-s25
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import print_report

CHILD = r"""
import json, sys, time, resource, numpy as np, torch
import convgen
torch.set_num_threads(int(sys.argv[4]))
pipe = convgen.load(sys.argv[1], device="cpu")
h, w = int(sys.argv[2]), int(sys.argv[3])
c = pipe.channels
img = np.random.default_rng(0).random((h, w, c), dtype=np.float32)
pipe.restore(img[:64, :64])  # warm-up
times = []
for _ in range(int(sys.argv[5])):
    t = time.perf_counter()
    out = pipe.restore(img, tile=int(sys.argv[6]) or None)
    times.append(time.perf_counter() - t)
print(json.dumps({"seconds": sorted(times)[len(times) // 2], "all_seconds": [round(t, 3) for t in times],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "output_shape": list(out.shape)}))
"""


def child(model: str, h: int, w: int, threads: int, repeats: int, tile: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, str(h), str(w), str(threads), str(repeats), str(tile)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="denoise-gray-s25")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tile", type=int, default=512)
    args = p.parse_args()
    small = child(args.model, 321, 481, args.threads, 5, args.tile)
    big = child(args.model, 3000, 4000, args.threads, 1, args.tile)
    # the CLI end to end on a 481x321 PNG (includes interpreter start-up, model load, decode and encode)
    with tempfile.TemporaryDirectory() as d:
        from PIL import Image

        Image.fromarray((np.random.default_rng(0).random((321, 481)) * 255).astype(np.uint8)).save(Path(d) / "x.png")
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "convgen",
                "restore",
                "denoise",
                args.model,
                "--input",
                f"{d}/x.png",
                "--output",
                f"{d}/y.png",
            ],
            check=True,
            capture_output=True,
        )
        cli_s = time.perf_counter() - t

    results = {
        "image_481x321": {"seconds_median_of_5": round(small["seconds"], 3), "all": small["all_seconds"]},
        "cli_481x321_end_to_end_seconds": round(cli_s, 2),
        "image_4000x3000_tiled": {
            "seconds": round(big["seconds"], 1),
            "peak_rss_mb": round(big["peak_rss_mb"]),
            "tile": args.tile,
        },
        "this_process_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print_report("restore_speed", results, threads=args.threads, model=args.model)


if __name__ == "__main__":
    main()
