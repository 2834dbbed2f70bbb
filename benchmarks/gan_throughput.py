"""DCGAN training throughput (images/s), side by side in one run, same architecture (64 px, ngf = ndf = 64,
nz = 100) and batch (64) on the bundled MNIST split:

* ``examples``: the pytorch/examples ``dcgan/main.py`` training loop, reproduced line for line (netD ends in a
  Sigmoid with ``nn.BCELoss``, two backward passes for D, netD's weight gradients computed during the G step,
  Adam with default kernels, a per-sample ``Dataset`` that resizes each 28 px digit to 64 px, as
  ``transforms.Resize(64)`` does, in a ``DataLoader`` with main.py's 2 workers);
* ``convgen-reference``: ``configs/gan/dcgan-reference.yaml`` through convgen's trainer (fp32, default memory format);
* ``convgen-default``: the same preset with convgen's default GAN engine settings (channels_last).

Prints one JSON object.    python benchmarks/gan_throughput.py [--steps 40] [--warmup 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import print_report
from torch import nn

import convgen
from convgen.config import load_config
from convgen.data.datasets import build_data
from convgen.models.gan import DCGAN

REPO = Path(__file__).resolve().parents[1]


class Resized(torch.utils.data.Dataset):
    """Per-sample pipeline of main.py: Resize(64) -> ToTensor -> Normalize(0.5, 0.5)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = self.images[i].float()[None] / 255.0
        x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)[0]
        return (x - 0.5) / 0.5, 0


def examples_loop(steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / "gan" / "dcgan-reference.yaml")
    data = build_data(cfg.data)
    gan = DCGAN(cfg.model)
    net_g, net_d_logits = gan.generator, gan.discriminator

    class WithSigmoid(nn.Module):
        def __init__(self, d: nn.Module) -> None:
            super().__init__()
            self.d = d

        def forward(self, x):
            return torch.sigmoid(self.d(x))

    net_d = WithSigmoid(net_d_logits)  # main.py's netD ends in nn.Sigmoid()
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(Resized(data.train.images), batch_size=64, shuffle=True, num_workers=2)
    done, t0 = 0, None
    while done < warmup + steps:
        for real, _ in loader:
            if done == warmup:
                t0 = time.perf_counter()
            if done == warmup + steps:
                break
            b = real.size(0)
            net_d.zero_grad()
            label = torch.full((b,), 1.0)
            err_real = criterion(net_d(real).view(-1), label)
            err_real.backward()
            noise = torch.randn(b, 100)
            fake = net_g(noise)
            label.fill_(0.0)
            err_fake = criterion(net_d(fake.detach()).view(-1), label)
            err_fake.backward()
            opt_d.step()
            net_g.zero_grad()
            label.fill_(1.0)
            err_g = criterion(net_d(fake).view(-1), label)
            err_g.backward()
            opt_g.step()
            done += 1
    return steps * 64 / (time.perf_counter() - t0)


def convgen_run(overrides: list[str], steps: int, warmup: int) -> float:
    cfg = load_config(
        REPO / "configs" / "gan" / "dcgan-reference.yaml",
        [f"train.max_steps={warmup + steps}", "train.log_every=1", "train.progress=false", "task.eval_samples=10"]
        + overrides,
    )
    with tempfile.TemporaryDirectory() as tmp:
        convgen.train(cfg, Path(tmp) / "run")
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["train/images_per_s"] for r in rows if "train/images_per_s" in r][warmup:]
    return len(rates) / sum(1 / r for r in rates)  # harmonic mean = images / total time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=8)
    args = p.parse_args()
    results = {
        "examples": examples_loop(args.steps, args.warmup),
        "convgen-reference": convgen_run([], args.steps, args.warmup),
        "convgen-default": convgen_run(["train.channels_last=true"], args.steps, args.warmup),
    }
    print_report(
        "dcgan_training_throughput",
        {
            "images_per_s": {k: round(v, 2) for k, v in results.items()},
            "ratio_default_vs_examples": round(results["convgen-default"] / results["examples"], 3),
            "ratio_default_vs_reference_preset": round(results["convgen-default"] / results["convgen-reference"], 3),
        },
        threads=torch.get_num_threads(),
        setup="64 px, ngf=ndf=64, nz=100, batch 64, Adam 2e-4 beta1 0.5, fp32, bundled MNIST 7,000 train",
        steps_timed=args.steps,
        warmup_steps=args.warmup,
    )


if __name__ == "__main__":
    main()
