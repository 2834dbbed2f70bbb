"""The training engine: learning happens, resume is exact, DDP keeps ranks identical, switches work."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

import convgen
from convgen.config import build_config
from convgen.engine.checkpoint import flatten_state, unflatten_state
from convgen.engine.trainer import Trainer
from convgen.errors import ConfigError, ConvgenError
from convgen.viz.curves import read_metrics
from tests.conftest import ENV_PYTHONPATH, REPO, tiny_config


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
    torch.use_deterministic_algorithms(False)


def test_loss_falls_and_run_dir_is_complete(tmp_path):
    result = convgen.train(build_config(tiny_config(train__epochs=3)), tmp_path / "run")
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    assert records[-1]["train/loss"] < 0.6 * records[0]["train/loss"]
    assert result.best_metric == "val/accuracy" and result.best_value > 0.7
    for name in ("config.json", "curves.png", "predictions.png", "model/classifier.safetensors", "model/config.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert (tmp_path / "run" / "checkpoints" / "best" / "meta.json").is_file()
    pipe = convgen.load(tmp_path / "run")
    x = torch.rand(3, 1, 28, 28)
    probs = pipe.predict_proba(x)
    assert probs.shape == (3, 10) and torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)


def test_existing_run_is_not_overwritten(tmp_path):
    cfg = build_config(tiny_config(train__max_steps=3))
    convgen.train(cfg, tmp_path / "run")
    with pytest.raises(ConvgenError, match="already holds a training run"):
        convgen.train(cfg, tmp_path / "run")


def test_resume_refuses_changed_config(tmp_path):
    convgen.train(build_config(tiny_config(train__max_steps=3)), tmp_path / "run")
    changed = build_config(tiny_config(train__max_steps=6, train__lr=0.1))
    with pytest.raises(ConfigError, match="train.lr"):
        convgen.train(changed, tmp_path / "run", resume="latest")


def test_optimizer_state_roundtrip():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), betas=(0.5, 0.9))
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors = {}
    flat = json.loads(json.dumps(flatten_state(opt.state_dict(), tensors)))
    back = unflatten_state(flat, tensors)
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(back)
    assert opt2.param_groups[0]["betas"] == (0.5, 0.9)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def resume_config():
    # dropout + augmentation + a scheduler: every RNG and every piece of state must be restored exactly
    return tiny_config(
        train__epochs=6,
        train__ckpt_every=10,
        train__eval_every=40,
        train__deterministic=True,
        train__threads=1,
        train__scheduler="onecycle",
        train__warmup_fraction=0.2,
    )


def test_killed_run_resumes_exactly(tmp_path):
    raw = resume_config()
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    reference = Trainer(build_config(raw), tmp_path / "straight")
    reference.fit()

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "convgen", "train", str(config_file), "--out", str(run)],
        env=ENV_PYTHONPATH,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    target = run / "checkpoints" / "step_00000020" / "meta.json"
    deadline = time.time() + 120
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists(), proc.stderr.read().decode()[-2000:]
    assert not (run / "model").exists(), "the run finished before it could be killed"

    result = convgen.train(None, run, resume="latest")
    assert result.step == reference.task.total_steps
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step_00000060" / "classifier.safetensors"))
    b = load_file(str(run / "checkpoints" / "step_00000060" / "classifier.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r]
    assert steps == sorted(set(steps)), "resumed run must not duplicate log records"


def test_ddp_two_processes_keep_identical_parameters(tmp_path):
    raw = tiny_config(train__epochs=1, train__threads=1)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "ddp_worker.py"),
        str(tmp_path),
        json.dumps(raw),
    ]
    proc = subprocess.run(cmd, env=ENV_PYTHONPATH, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    saved = load_file(str(tmp_path / "run" / "checkpoints" / "step_00000005" / "classifier.safetensors"))
    assert all(torch.equal(saved[k], r0[k]) for k in r0)  # rank 0 wrote the checkpoint of the shared weights
    # each rank saw half the data: 500 train digits / (2 x 50) = 5 steps
    steps = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    assert max(steps) == 5 and steps == sorted(set(steps))


@pytest.mark.parametrize("switch", ["train.bf16=true", "train.channels_last=true"])
def test_precision_and_memory_format_switches(tmp_path, switch):
    from convgen.config import apply_overrides

    raw = apply_overrides(tiny_config(train__epochs=2), [switch])
    result = convgen.train(build_config(raw), tmp_path / "run")
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    assert records[-1]["train/loss"] < records[0]["train/loss"] and result.best_value > 0.5


def test_tensorboard_events_written(tmp_path):
    pytest.importorskip("tensorboard")
    convgen.train(build_config(tiny_config(train__max_steps=5, train__tensorboard=True)), tmp_path / "run")
    assert any((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_stop_at_step_ends_a_stage_on_the_full_schedule(tmp_path):
    """``train.stop_at_step`` ends the run early with the learning rates of the full-length schedule, which is
    how a multi-stage recipe hands a checkpoint to its next stage."""
    cfg = tiny_config(train__max_steps=24, train__scheduler="cosine", train__log_every=4, train__eval_every=12,
                      train__ckpt_every=12)  # fmt: skip
    full = convgen.train(build_config(cfg), tmp_path / "full")
    stage = convgen.train(build_config({**cfg, "train": {**cfg["train"], "stop_at_step": 12}}), tmp_path / "stage")
    lrs = lambda run: {r["step"]: r["train/lr"] for r in read_metrics(run / "metrics.jsonl") if "train/lr" in r}  # noqa: E731
    a, b = lrs(tmp_path / "full"), lrs(tmp_path / "stage")
    assert max(b) == 12 and all(a[s] == pytest.approx(b[s]) for s in b)
    assert (tmp_path / "stage" / "checkpoints" / "step_00000012").is_dir() and full.best_value > 0
    assert stage.run_dir == tmp_path / "stage"
