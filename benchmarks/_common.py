"""Shared by the benchmarks: the one JSON report header they all print (:func:`print_report`), and for the
restoration benchmarks the ``--model LABEL=NAME`` loader and SSIM."""

from __future__ import annotations

import json
import os
import platform
from datetime import date
from pathlib import Path

import numpy as np

import convgen


def load_models(specs: list[str]) -> dict:
    """``NAME`` or ``LABEL=NAME_OR_PATH`` -> {label: pipeline on the CPU}."""
    models = {}
    for spec in specs:
        label, _, name = spec.partition("=") if "=" in spec else (spec, "", spec)
        models[label] = convgen.load(name or label, device="cpu")
    return models


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """scikit-image SSIM with data range 1 of two H x W x C images (C = 1: plain gray SSIM)."""
    from skimage.metrics import structural_similarity

    if a.shape[-1] == 1:
        return float(structural_similarity(a[..., 0], b[..., 0], data_range=1.0))
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=-1))


def cpu_model() -> str:
    """The CPU's model name (the machines change between sessions: a speed is only compared within one run)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_report(benchmark: str, results: dict, threads: int | None = None, **fields) -> None:
    """One JSON object on stdout: the benchmark's name, its ``fields`` (images, protocol, ...), the results, the
    machine and the date."""
    import torch

    machine = f"{cpu_model()}, torch {torch.__version__}"
    if threads is not None:
        machine += f", {threads} threads"
    report = {
        "benchmark": benchmark,
        **fields,
        "results": results,
        "machine": machine,
        "date": date.today().isoformat(),
    }
    print(json.dumps(report, indent=1))
