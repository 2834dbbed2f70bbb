"""Classifier training, convgen recipe vs the pytorch/examples MNIST recipe, side by side in one run.

Both train on the same 7,000 bundled digits and are scored on the same 1,000 validation digits.
Baseline = pytorch/examples `mnist/main.py`: its `Net` (2 conv + 2 fc, dropout), Adadelta lr 1.0, StepLR gamma 0.7,
batch 64, 14 epochs, Normalize(0.1307, 0.3081), a per-sample Dataset + DataLoader (as torchvision's MNIST gives).
Prints one JSON object.

    python benchmarks/classifier_training.py [--baseline-epochs 14] [--overrides train.epochs=15]
"""

from __future__ import annotations

import argparse
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

REPO = Path(__file__).resolve().parents[1]


class ExamplesNet(nn.Module):
    """pytorch/examples mnist/main.py `Net`, verbatim architecture."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


class PerSample(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i].float() / 255.0
        return (x - 0.1307) / 0.3081, int(self.labels[i])


def run_baseline(data, epochs: int) -> dict:
    torch.manual_seed(1)
    model = ExamplesNet()
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    loader = torch.utils.data.DataLoader(PerSample(data.train.images, data.train.labels), batch_size=64, shuffle=True)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            F.nll_loss(model(x), y).backward()
            opt.step()
        sched.step()
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        xv = (data.val.images.float() / 255.0 - 0.1307) / 0.3081
        acc = (model(xv).argmax(1) == data.val.labels).float().mean().item()
    return {"val_accuracy": acc, "train_seconds": seconds, "images_per_s": epochs * len(data.train) / seconds}


def run_convgen(overrides: list[str]) -> dict:
    preset = REPO / "configs" / "classification" / "mnist-classifier.yaml"
    cfg = load_config(preset, ["train.progress=false", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = convgen.train(cfg, Path(tmp) / "run")
        seconds = time.perf_counter() - t0
    images = cfg.train.epochs * len(build_data(cfg.data).train)
    return {
        "val_accuracy_best": result.best_value,
        "val_accuracy_final": result.final_metrics.get("val/accuracy"),
        "train_seconds": seconds,
        "images_per_s": images / seconds,
        "epochs": cfg.train.epochs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline-epochs", type=int, default=14)
    p.add_argument("--overrides", nargs="*", default=[], help="overrides for the convgen recipe")
    args = p.parse_args()
    data = build_data(load_config(REPO / "configs" / "classification" / "mnist-classifier.yaml").data)
    ours = run_convgen(args.overrides)
    base = run_baseline(data, args.baseline_epochs)
    base["epochs"] = args.baseline_epochs
    results = {
        "convgen": ours,
        "baseline_pytorch_examples": base,
        "error_rate_ratio_baseline_over_convgen": (1 - base["val_accuracy"])
        / max(1e-9, 1 - ours["val_accuracy_final"]),
        "time_ratio_baseline_over_convgen": base["train_seconds"] / ours["train_seconds"],
    }
    data_note = "bundled MNIST 8k split: 7000 train / 1000 val (stratified, split_seed 0)"
    print_report("classifier_training", results, threads=torch.get_num_threads(), data=data_note)


if __name__ == "__main__":
    main()
