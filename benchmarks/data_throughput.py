"""Is CIFAR-10 training bound by the network or by the data? Decode, feed and train rates in one run.

Three rates, images per second on this machine:

* **decode**: ``image-folder`` reading ``../shared/data/cifar10/train`` (JPEG files, one folder per class) into the
  uint8 array it keeps in memory for the whole run (done once per run);
* **feed**: batches from that array as the training loop takes them (``BatchLoader``: index, uint8 -> float, then
  the recipe's flips and reflect-padded 2-pixel crops);
* **train**: optimiser steps of ``cifar10-classifier-v1``'s network (``whitened-convnet`` 64/256/256, batch 1024, SGD).

Training is data-bound when feed < train. Prints one JSON object.

    python benchmarks/data_throughput.py [--limit 50000] [--steps 4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import print_report

from convgen.data.datasets import ImageFolder, _bundle
from convgen.data.formats import read_image_folder
from convgen.data.loader import BatchLoader
from convgen.data.transforms import AugmentConfig
from convgen.models.classifier import WhitenedConvNet

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10" / "train"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=CIFAR)
    p.add_argument("--limit", type=int, default=50_000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=4, help="timed training steps (after one warm-up step)")
    args = p.parse_args()

    t = time.perf_counter()
    images, labels, classes = read_image_folder(args.root, 3, limit=args.limit)
    decode_s = time.perf_counter() - t
    data = _bundle(images, labels, classes, "cifar10", ImageFolder.Config(root=str(args.root), val_count=0))

    augment = AugmentConfig(hflip=True, crop_padding=2, crop_reflect=True)
    gen = torch.Generator().manual_seed(0)
    loader = BatchLoader(data.train, args.batch_size)
    t, fed = time.perf_counter(), 0
    for x, _ in loader.batches(0):
        x = augment.apply(x, gen)
        fed += len(x)
    feed_s = time.perf_counter() - t

    net = WhitenedConvNet(WhitenedConvNet.Config())
    net.init_from_data(data.train.batch(torch.arange(min(5000, len(data.train))))[0])
    opt = torch.optim.SGD([q for q in net.parameters() if q.requires_grad], lr=0.1, momentum=0.85, nesterov=True)
    batches = loader.batches(1)
    times = []
    for i in range(args.steps + 1):
        x, y = next(batches)
        x = augment.apply(x, gen)
        t = time.perf_counter()
        loss = F.cross_entropy(net(x), y, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    train_rate = args.batch_size * len(times) / sum(times)
    results = {
        "decode_images_per_s": round(len(images) / decode_s, 1),
        "decode_seconds": round(decode_s, 2),
        "feed_images_per_s": round(fed / feed_s, 1),
        "train_images_per_s": round(train_rate, 1),
        "feed_over_train": round(fed / feed_s / train_rate, 1),
        "epoch_minutes_at_train_rate": round(len(images) / train_rate / 60, 2),
    }
    print_report("data_throughput", results, threads=torch.get_num_threads(), images=len(images),
                 data=str(args.root), batch_size=args.batch_size)  # fmt: skip


if __name__ == "__main__":
    main()
