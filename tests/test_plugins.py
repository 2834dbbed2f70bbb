"""A model family registered from outside the package (tests/plugins/toy_identity.py: a model, a task and a
pipeline with its own restore verb) trains with ``convgen train`` and serves through ``convgen restore``, loaded as
a plugin through ``$CONVGEN_PLUGINS`` and through a ``convgen.plugins`` entry point, with no edit to convgen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from tests.conftest import ENV_PYTHONPATH

PLUGINS = Path(__file__).resolve().parent / "plugins"


def run(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "convgen", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_plugin_family_trains_saves_and_restores(tmp_path: Path):
    env = {**ENV_PYTHONPATH, "PYTHONPATH": f"{ENV_PYTHONPATH['PYTHONPATH']}{os.pathsep}{PLUGINS}"}
    env["CONVGEN_PLUGINS"] = "toy_identity"
    cfg = {
        "name": "toy",
        "task": {"type": "toy-identity"},
        "model": {"type": "toy-identity", "channels": 1},
        "data": {"type": "mnist", "limit": 300, "val_count": 50},
        "train": {"max_steps": 60, "batch_size": 25, "lr": 0.05, "log_every": 10, "eval_every": 20, "progress": False},
    }
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(cfg))
    r = run("train", str(tmp_path / "toy.yaml"), "--out", str(tmp_path / "run"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    mse = [rec["train/mse"] for rec in records if "train/mse" in rec]
    assert mse[-1] < 0.1 * mse[0]  # it learned the identity
    assert summary["best_metric"] == "val/mse" and summary["best_value"] < 0.01
    model = tmp_path / "run" / "model"
    assert (model / "net.safetensors").is_file()
    assert json.loads((model / "meta.json").read_text())["toy"] == "exported by a plugin"  # the task's export_meta
    assert json.loads((model / "tables.json").read_text()) == {"built": True}  # written by its finalize_export

    digit = (np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)
    Image.fromarray(digit).save(tmp_path / "in.png")
    r = run("restore", "identity", str(tmp_path / "run"), "--input", str(tmp_path / "in.png"),
            "--output", str(tmp_path / "out.png"), env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(tmp_path / "out.png"), np.float64)
    assert out.shape == digit.shape and np.abs(out - digit).mean() < 8
    r = run("restore", "denoise", str(tmp_path / "run"), "--input", str(tmp_path / "in.png"),
            "--output", str(tmp_path / "o2.png"), env=env)  # fmt: skip
    assert r.returncode == 2 and "not a denoise model" in r.stderr and "Traceback" not in r.stderr
    # the shipped models are still served next to the plugin
    r = run("restore", "denoise", "denoise-gray-s25", "--input", str(tmp_path / "in.png"),
            "--output", str(tmp_path / "o3.png"), env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_plugin_through_an_entry_point_and_a_broken_one(tmp_path: Path):
    site = tmp_path / "site"
    for name, module in (("toy", "toy_identity"), ("broken", "no_such_plugin_module")):
        info = site / f"convgen_{name}_plugin-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: convgen-{name}-plugin\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[convgen.plugins]\n{name} = {module}\n")
    path = os.pathsep.join([ENV_PYTHONPATH["PYTHONPATH"], str(PLUGINS), str(site)])
    env = {**ENV_PYTHONPATH, "PYTHONPATH": path}
    env.pop("CONVGEN_PLUGINS", None)
    r = run("restore", "--help", env=env)
    assert r.returncode == 0, r.stderr
    assert "identity" in r.stdout and "denoise" in r.stdout
    assert "plugin 'broken' failed to import and is ignored" in r.stderr
    env["CONVGEN_PLUGINS"] = "no_such_plugin_module"
    r = run("restore", "--help", env=env)
    assert r.returncode == 2 and "CONVGEN_PLUGINS" in r.stderr and len(r.stderr.strip().splitlines()) <= 2
