"""The generic training loop: steps, logging, validation, checkpoints, resume, DDP.

Usage::

    from convgen.config import load_config
    from convgen.engine.trainer import Trainer
    result = Trainer(load_config("configs/classification/mnist-classifier.yaml"), "runs/mnist").fit()

Layout of a run directory::

    config.json          resolved config          metrics.jsonl   one JSON record per log/eval line
    checkpoints/step_N/  full resume state        checkpoints/best/  best by the validation metric
    model/               exported model (config + weights of the best checkpoint), loadable by convgen.load
    curves.png           training curves          + task pictures (e.g. predictions.png)
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from convgen import modeldir
from convgen.config import RunConfig, build_config, load_config
from convgen.data.datasets import build_data
from convgen.data.loader import BatchLoader
from convgen.device import pick_device
from convgen.engine import checkpoint as ckpt
from convgen.engine.runtime import (
    barrier,
    init_distributed,
    mean_across_ranks,
    rng_state,
    seed_everything,
    set_deterministic,
    set_rng_state,
    shutdown_distributed,
    sync_buffers,
)
from convgen.engine.task import Context, Task
from convgen.errors import ConfigError, ConvgenError
from convgen.io.atomic import atomic_write_text
from convgen.io.lock import DirectoryLock
from convgen.io.weights import load_models, read_json
from convgen.registry import TASKS

# Keys a resumed run may change; any other difference from the saved config is refused.
RESUMABLE_CHANGES = {
    "train.epochs",
    "train.max_steps",
    "train.max_minutes",
    "train.stop_at_step",
    "train.progress",
    "train.log_every",
    "train.tensorboard",
    "train.device",
    "train.threads",
    "task.fd_extractor",  # a new name for the same weights: checkpoints record the extractor's digest (Task)
}


class TrainingError(ConvgenError):
    """Training cannot continue (non-finite loss, ...)."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    best_metric: str
    best_value: float | None
    final_metrics: dict[str, float]
    seconds: float


def _finite_models(task: Task) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in task.models.values() for p in m.parameters())


def _flat_keys(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        out.update(_flat_keys(v, key) if isinstance(v, dict) else {key: v})
    return out


def config_changes(old: dict, new: dict) -> list[str]:
    a, b = _flat_keys(old), _flat_keys(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


class Trainer:
    """One training run: ``Trainer(cfg, run_dir, resume).fit()``. The loop is the short methods below; a task
    supplies the maths (:class:`~convgen.engine.task.Task`)."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, resume: str | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.ckpt_root = self.run_dir / "checkpoints"

    # -- setup -------------------------------------------------------------------------------------------------
    def _resume_from(self) -> Path | None:
        if self.resume is None:
            if ckpt.step_checkpoints(self.ckpt_root) or (self.run_dir / "model").exists():
                raise ConvgenError(
                    f"{self.run_dir} already holds a training run; pass `resume` latest to continue it, "
                    "or choose another `out`"
                )
            return None
        if self.resume == "latest":
            found, skipped = ckpt.latest_intact_checkpoint(self.ckpt_root)
            if found is None and skipped:
                path, problem = skipped[0]
                raise ConvgenError(
                    f"{self.ckpt_root}: every checkpoint is corrupt (the newest, {path.name}: {problem}); cannot resume"
                )
            for path, problem in skipped:
                print(
                    f"convgen: warning: skipping {path.name}, it is corrupt ({problem}); resuming from {found.name}",
                    file=sys.stderr,
                )
            if found is None:
                print(f"convgen: no checkpoint in {self.ckpt_root}; starting a new run", file=sys.stderr)
            return found
        path = Path(self.resume)
        if not (path / "meta.json").is_file():
            raise ConvgenError(f"{path}: not a checkpoint directory (no meta.json)")
        problem = ckpt.checkpoint_problem(path)
        if problem is not None:
            raise ConvgenError(f"{path}: the checkpoint is corrupt ({problem})")
        return path

    def _check_resumable(self, source: Path) -> None:
        saved = build_config(read_json(source / "config.json")).to_dict()  # normalised: same schema as today's
        changed = [k for k in config_changes(saved, self.cfg.to_dict()) if k not in RESUMABLE_CHANGES]
        if changed:
            raise ConfigError(
                f"cannot resume {source}: the config differs in {', '.join(changed[:5])} "
                f"(only {', '.join(sorted(RESUMABLE_CHANGES))} may change)"
            )

    def fit(self) -> TrainResult:
        """Train; the run directory is locked for this process (rank 0) until it ends."""
        self.info = init_distributed(self.cfg.train.device)
        try:
            with DirectoryLock(self.run_dir) if self.info.is_main else contextlib.nullcontext():
                return self._fit()
        finally:
            shutdown_distributed()

    def _setup(self) -> Path | None:
        """Device, data, task and counters; returns the checkpoint to resume from (or None)."""
        cfg, tcfg, info = self.cfg, self.cfg.train, self.info
        if tcfg.threads:
            torch.set_num_threads(tcfg.threads)
        set_deterministic(tcfg.deterministic)
        device = pick_device(tcfg.device)
        source = self._resume_from()
        if source is not None:
            self._check_resumable(source)
        seed_everything(cfg.seed)
        self.data = build_data(cfg.data)
        self.loader = BatchLoader(
            self.data.train, tcfg.batch_size, shuffle=True, seed=cfg.seed, rank=info.rank, world_size=info.world_size
        )
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"train.batch_size {tcfg.batch_size} x {info.world_size} process(es) is larger than the "
                f"{len(self.data.train)} training images"
            )
        self.total = tcfg.epochs * self.steps_per_epoch
        if tcfg.max_steps is not None:
            self.total = min(self.total, tcfg.max_steps)
        ctx = Context(device=device, dist=info, bf16=tcfg.bf16, channels_last=tcfg.channels_last)
        self.task = task = TASKS.get(cfg.task.registry_name)(cfg, self.data, ctx, self.total)
        task.run_dir = self.run_dir if info.is_main else None
        task.steps_per_epoch = self.steps_per_epoch
        seed_everything(cfg.seed + 1_000_003 * info.rank)  # distinct dropout noise per rank, same init
        best_key, best_mode = task.best_metric
        self.best_key, self.best_mode = tcfg.best_metric or best_key, tcfg.best_mode or best_mode
        self.step, self.best_value, self.val = 0, None, {}
        self.health = {"rollbacks": 0, "lr_scale": 1.0}  # saved with every checkpoint
        self.device = device
        return source

    def _load_checkpoint(self, source: Path) -> dict:
        """Networks, optimisers, schedules, task extras and RNG states from ``source``; returns its state."""
        state = ckpt.load_state(source)
        load_models(source, self.task.models)
        self.task.load_state_dict(state["task"])
        set_rng_state(state["rng"])
        return state

    def _restore(self, source: Path) -> None:
        state = self._load_checkpoint(source)
        self.step, self.best_value = state["step"], state.get("best_value")
        self.health.update(state.get("health", {}))
        self._log(f"resumed from {source} at step {self.step}")
        if self.info.is_main:
            self._truncate_metrics(self.step)

    def _open_outputs(self) -> None:
        """Run directory, config.json, the metrics log, TensorBoard and the progress bar (main process)."""
        main, tcfg = self.info.is_main, self.cfg.train
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.json", json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        self.metrics_file = (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") if main else None
        self.tb = self._tensorboard() if main and tcfg.tensorboard else None
        self.bar = tqdm(
            total=self.total,
            initial=self.step,
            desc=self.cfg.name,
            disable=not (main and tcfg.progress),
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    # -- loop ----------------------------------------------------------------------------------------------------
    def _fit(self) -> TrainResult:
        self.t_start = time.perf_counter()
        source = self._setup()
        if source is not None:
            self._restore(source)
        self._open_outputs()
        data = self.data
        self._log(
            f"{data.source}: {len(data.train)} train / {len(data.val) if data.val else 0} val images; "
            f"{self.total} steps on {self.device} x {self.info.world_size}"
        )
        self._reset_window()
        while self.step < self.total:
            if not self._run_epoch():  # rolled back: continue from the restored step
                self.bar.reset(total=self.total)
                self.bar.update(self.step)
                self._reset_window()
        self._close_outputs()
        if self.info.is_main:
            self._finish()
        barrier(self.info)
        seconds = time.perf_counter() - self.t_start
        return TrainResult(self.run_dir, self.step, self.best_key, self.best_value, self.val, seconds)

    def _run_epoch(self) -> bool:
        """Train from the current step to the end of its epoch (or of the run); False after a rollback."""
        epoch, start = divmod(self.step, self.steps_per_epoch)
        for batch in self.loader.batches(epoch, start):
            out = self.task.train_step(batch, self.step)
            self.step += 1
            self.images += batch[0].shape[0] * self.info.world_size
            if not all(math.isfinite(v) for v in out.values()):
                bad = ", ".join(f"{k} {v}" for k, v in out.items() if not math.isfinite(v))
                return self._rollback(f"non-finite training values ({bad})")
            for k, v in out.items():
                self.window[k] = self.window.get(k, 0.0) + v
            self.window_n += 1
            self.bar.update(1)
            tcfg = self.cfg.train
            if tcfg.max_minutes and time.perf_counter() - self.t_start >= tcfg.max_minutes * 60:
                self.total = self.step  # time budget spent: this step validates, checkpoints and ends the run
            if tcfg.stop_at_step and self.step >= tcfg.stop_at_step:
                self.total = self.step  # a stage that hands over: same schedule, earlier end
            if self.step % tcfg.log_every == 0 or self.step == self.total:
                self._log_window()
            if not self._validate_and_save():
                return False
            if self.step >= self.total:
                break
        return True

    def _validate_and_save(self) -> bool:
        """Validation and checkpoint when they are due; False after a rollback."""
        step, total = self.step, self.total
        eval_every = self.cfg.train.eval_every or self.steps_per_epoch
        ckpt_every = self.cfg.train.ckpt_every or self.steps_per_epoch
        evaluate_now = step % eval_every == 0 or step == total
        if evaluate_now or step % ckpt_every == 0:
            for module in self.task.models.values():
                sync_buffers(module, self.info)
        if evaluate_now:
            problem = self._validate()
            if problem is not None:
                return self._rollback(problem)
        if step % ckpt_every == 0 or step == total:
            if not evaluate_now and not _finite_models(self.task):  # an evaluation has just checked them
                return self._rollback("non-finite network weights")
            self._save()
            barrier(self.info)
        return True

    def _reset_window(self) -> None:
        self.window: dict[str, float] = {}
        self.window_n, self.window_t, self.images = 0, time.perf_counter(), 0

    def _log_window(self) -> None:
        now = time.perf_counter()
        avg = mean_across_ranks({k: v / self.window_n for k, v in self.window.items()}, self.info)
        record = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4)}
        record.update({f"train/{k}": v for k, v in avg.items()})
        record["train/images_per_s"] = self.images / max(now - self.window_t, 1e-9)
        self._write(record)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in avg.items() if k in self.task.progress_keys})
        self._reset_window()

    def _write(self, record: dict) -> None:
        if self.metrics_file:
            self.metrics_file.write(json.dumps(record) + "\n")
            self.metrics_file.flush()
        if self.tb:
            for k, v in record.items():
                if "/" in k:
                    self.tb.add_scalar(k, v, record["step"])

    def _validate(self) -> str | None:
        """Run the task's evaluation (main process); a reason to roll back, or None."""
        task, main, step = self.task, self.info.is_main, self.step
        task.current_step = step
        self.val = {f"val/{k}": v for k, v in task.evaluate().items()} if main else {}
        if self.val:
            self._write({"step": step, "epoch": round(step / self.steps_per_epoch, 4), **self.val})
            self.bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in self.val.items()), file=sys.stderr)
        problem = task.health(self.val, step) if main else None
        if problem is None and not _finite_models(task):
            problem = "non-finite network weights"
        return problem

    def _save(self) -> None:
        if not self.info.is_main:
            return
        step, value = self.step, self.val.get(self.best_key)
        best = self.best_value
        improved = value is not None and (best is None or (value > best if self.best_mode == "max" else value < best))
        if improved:
            self.best_value = value
        state = {
            "step": step,
            "best_value": self.best_value,
            "rng": rng_state(),
            "task": self.task.state_dict(),
            "health": dict(self.health),
        }
        meta = {"step": step, "epoch": step / self.steps_per_epoch, "metrics": self.val, "best_metric": self.best_key}
        config = self.cfg.to_dict()
        ckpt.save_checkpoint(self.ckpt_root / f"step_{step:08d}", config, self.task.models, state, meta)
        if improved:
            ckpt.save_checkpoint(self.ckpt_root / "best", config, self.task.models, state, meta)
        ckpt.prune_checkpoints(self.ckpt_root, self.cfg.train.keep_last)

    def _rollback(self, reason: str) -> bool:
        """Restore the newest checkpoint with lower learning rates (or raise); always returns False."""
        tcfg, info, health, task = self.cfg.train, self.info, self.health, self.task
        source = ckpt.latest_checkpoint(self.ckpt_root) if info.is_main else None
        if info.world_size > 1 or source is None or health["rollbacks"] >= tcfg.max_rollbacks:
            if info.world_size > 1:
                why = "automatic rollback is not supported in multi-process runs; resume from a checkpoint"
            elif source is None:
                why = "no checkpoint to roll back to yet"
            else:
                why = f"{health['rollbacks']} rollback(s) already done (train.max_rollbacks={tcfg.max_rollbacks})"
            raise TrainingError(f"{reason} at step {self.step}; {why}. Try a lower train.lr or train.grad_clip")
        state = self._load_checkpoint(source)
        saved_scale = state.get("health", {}).get("lr_scale", 1.0)
        health["rollbacks"] += 1
        health["lr_scale"] *= tcfg.rollback_lr_factor
        task.scale_learning_rates(health["lr_scale"] / saved_scale)
        seed_everything(self.cfg.seed + 7919 * health["rollbacks"])  # do not replay the same trajectory
        task.reseed(health["rollbacks"])
        message = (
            f"{reason} at step {self.step}; rolled back to step {state['step']} with learning rates x"
            f"{health['lr_scale']:.3g} (rollback {health['rollbacks']} of {tcfg.max_rollbacks})"
        )
        self.bar.write(f"convgen: warning: {message}", file=sys.stderr)
        self._write({"step": state["step"], "event": "rollback", "at_step": self.step, "reason": reason})
        self.step = state["step"]
        return False

    # -- end -----------------------------------------------------------------------------------------------------
    def _close_outputs(self) -> None:
        self.bar.close()
        if self.metrics_file:
            self.metrics_file.close()
        if self.tb:
            self.tb.close()

    def _finish(self) -> None:
        """Export the best checkpoint's networks as ``model/``, draw the curves, let the task draw its pictures."""
        from convgen.viz.curves import plot_curves

        task = self.task
        best = self.ckpt_root / "best"
        source = best if best.is_dir() else ckpt.latest_checkpoint(self.ckpt_root)
        if source is not None and task.export_models:
            extra = {
                "exported_from": source.name,
                "best_metric": self.best_key,
                "best_value": self.best_value,
                **task.export_meta(),
            }
            model_dir = modeldir.export(source, self.run_dir / "model", list(task.export_models), extra)
            task.finalize_export(model_dir)
            modeldir.record_checksums(model_dir)  # the files the task added too
            load_models(source, task.models)  # pictures show the exported (best) weights
        if (self.run_dir / "metrics.jsonl").is_file():
            plot_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png")
        task.on_train_end(self.run_dir)

    def _truncate_metrics(self, step: int) -> None:
        """Drop log records written after the checkpoint we resume from (they will be written again)."""
        from convgen.viz.curves import read_metrics

        path = self.run_dir / "metrics.jsonl"
        if path.is_file():
            kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.tensorboard needs the tensorboard package (pip install convgen[tensorboard])"
            ) from None
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    def _log(self, message: str) -> None:
        if self.info.is_main:
            print(f"convgen: {message}", file=sys.stderr)


def train(
    config: str | Path | RunConfig | None,
    out: str | Path,
    overrides: list[str] | None = None,
    resume: str | None = None,
) -> TrainResult:
    """Python API: train from a config file (or RunConfig) into run directory ``out``.

    With ``resume`` ("latest" or a checkpoint path) and no config, the run's saved ``config.json`` is used.
    """
    if isinstance(config, RunConfig):
        cfg = config
    else:
        if config is None:
            saved = Path(out) / "config.json"
            if resume is None or not saved.is_file():
                raise ConfigError("a config file is needed (only a resumed run can reuse its saved config.json)")
            config = saved
        cfg = load_config(config, overrides)
    return Trainer(cfg, out, resume=resume).fit()
