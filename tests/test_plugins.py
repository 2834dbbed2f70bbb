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
    # the plugin's own options, declared once: flags with their help, checks, and the web app's form description
    r = run("restore", "identity", str(tmp_path / "run"), "--input", str(tmp_path / "in.png"),
            "--output", str(tmp_path / "gain.png"), "--gain", "2", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    doubled = np.asarray(Image.open(tmp_path / "gain.png"), np.float64)
    assert np.abs(np.minimum(2 * out, 255) - doubled).mean() < 3
    r = run("sample", str(tmp_path / "run"), "--n", "2", "--out", str(tmp_path / "s"), "--brightness", "0.5", env=env)
    assert r.returncode == 0, r.stderr
    assert np.abs(np.asarray(Image.open(tmp_path / "s" / "00000.png"), np.float64) - 64).max() < 8  # 0.5 x 0.5
    for args, flag in ((["sample", "--help"], "--brightness"), (["restore", "identity", "--help"], "--gain")):
        r = run(*args, env=env)
        assert r.returncode == 0 and flag in r.stdout and "[toy-identitymodels]" in "".join(r.stdout.split()), r.stdout
    for args, message in (
        (["sample", str(tmp_path / "run"), "--n", "2", "--out", str(tmp_path / "s2"), "--brightness", "nan"],
         "--brightness nan: must be a finite number"),
        (["restore", "identity", str(tmp_path / "run"), "--input", str(tmp_path / "in.png"), "--output",
          str(tmp_path / "g2.png"), "--gain", "-1"], "--gain -1: must be in [0, 4]"),
    ):  # fmt: skip
        r = run(*args, env=env)
        assert r.returncode == 2 and r.stderr.strip() == f"convgen: error: {message}", r.stderr
    assert not (tmp_path / "s2").exists() and not (tmp_path / "g2.png").exists()
    script = (
        "import json, sys\n"
        "from fastapi.testclient import TestClient\n"
        "from convgen.app.server import Settings, create_app\n"
        "app = create_app(Settings(models=[sys.argv[1]]))\n"
        "print(json.dumps(TestClient(app).get('/api/models').json()))\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True,
                       env=env, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    toy = next(m for m in json.loads(r.stdout)["models"] if m["name"] == "run")
    (brightness,) = toy["options"]["sample"]
    (gain,) = toy["options"]["restore"]["identity"]
    assert brightness["name"] == "brightness" and brightness["type"] == "float" and brightness["default"] == 1.0
    assert brightness["lo"] == 0 and brightness["hi"] == 4 and "brightness" in brightness["help"]
    assert gain["name"] == "gain" and gain["type"] == "float" and gain["default"] == 1.0 and gain["help"]
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
