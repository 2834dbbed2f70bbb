"""The generic training loop: steps, logging, validation, checkpoints, resume, DDP.

Usage::

    from convgen.config import load_config
    from convgen.engine.trainer import Trainer
    result = Trainer(load_config("configs/mnist-classifier.yaml"), "runs/mnist").fit()

Layout of a run directory::

    config.json          resolved config          metrics.jsonl   one JSON record per log/eval line
    checkpoints/step_N/  full resume state        checkpoints/best/  best by the validation metric
    model/               exported model (config + weights of the best checkpoint), loadable by convgen.load
    curves.png           training curves          + task pictures (e.g. predictions.png)
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from convgen.config import RunConfig, load_config
from convgen.data.datasets import build_data
from convgen.data.loader import BatchLoader
from convgen.engine import checkpoint as ckpt
from convgen.engine.runtime import (
    DistInfo,
    barrier,
    init_distributed,
    mean_across_ranks,
    pick_device,
    rng_state,
    seed_everything,
    set_deterministic,
    set_rng_state,
    shutdown_distributed,
    sync_buffers,
)
from convgen.errors import ConfigError, ConvgenError
from convgen.io.atomic import atomic_write_text
from convgen.registry import TASKS
from convgen.tasks.base import Context, Task

# Keys a resumed run may change; any other difference from the saved config is refused.
RESUMABLE_CHANGES = {
    "train.epochs",
    "train.max_steps",
    "train.max_minutes",
    "train.progress",
    "train.log_every",
    "train.tensorboard",
    "train.device",
    "train.threads",
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
                    f"{self.run_dir} already holds a training run; pass --resume latest to continue it, "
                    "or choose another --out"
                )
            return None
        if self.resume == "latest":
            found = ckpt.latest_checkpoint(self.ckpt_root)
            if found is None:
                print(f"convgen: no checkpoint in {self.ckpt_root}; starting a new run", file=sys.stderr)
            return found
        path = Path(self.resume)
        if not (path / "meta.json").is_file():
            raise ConvgenError(f"{path}: not a checkpoint directory (no meta.json)")
        return path

    def _check_resumable(self, source: Path) -> None:
        saved = ckpt.read_json(source / "config.json")
        changed = [k for k in config_changes(saved, self.cfg.to_dict()) if k not in RESUMABLE_CHANGES]
        if changed:
            raise ConfigError(
                f"cannot resume {source}: the config differs in {', '.join(changed[:5])} "
                f"(only {', '.join(sorted(RESUMABLE_CHANGES))} may change)"
            )

    # -- loop ----------------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg, tcfg = self.cfg, self.cfg.train
        info = init_distributed(tcfg.device)
        try:
            return self._fit(cfg, tcfg, info)
        finally:
            shutdown_distributed()

    def _fit(self, cfg: RunConfig, tcfg, info: DistInfo) -> TrainResult:
        t_start = time.perf_counter()
        if tcfg.threads:
            torch.set_num_threads(tcfg.threads)
        set_deterministic(tcfg.deterministic)
        device = pick_device(tcfg.device)
        source = self._resume_from()
        if source is not None:
            self._check_resumable(source)
        seed_everything(cfg.seed)
        data = build_data(cfg.data)
        loader = BatchLoader(
            data.train, tcfg.batch_size, shuffle=True, seed=cfg.seed, rank=info.rank, world_size=info.world_size
        )
        steps_per_epoch = len(loader)
        if steps_per_epoch == 0:
            raise ConfigError(
                f"train.batch_size {tcfg.batch_size} x {info.world_size} process(es) is larger than the "
                f"{len(data.train)} training images"
            )
        total = tcfg.epochs * steps_per_epoch
        if tcfg.max_steps is not None:
            total = min(total, tcfg.max_steps)
        ctx = Context(device=device, dist=info, bf16=tcfg.bf16, channels_last=tcfg.channels_last)
        task: Task = TASKS.get(cfg.task.registry_name)(cfg, data, ctx, total)
        self.task = task
        task.run_dir = self.run_dir if info.is_main else None
        seed_everything(cfg.seed + 1_000_003 * info.rank)  # distinct dropout noise per rank, same init

        best_key, best_mode = task.best_metric
        best_key, best_mode = tcfg.best_metric or best_key, tcfg.best_mode or best_mode
        step, best_value = 0, None
        health = {"rollbacks": 0, "lr_scale": 1.0}  # saved with every checkpoint
        if source is not None:
            state = ckpt.load_state(source)
            ckpt.load_models(source, task.models)
            task.load_state_dict(state["task"])
            set_rng_state(state["rng"])
            step, best_value = state["step"], state.get("best_value")
            health.update(state.get("health", {}))
            self._log(info, f"resumed from {source} at step {step}")
            if info.is_main:
                self._truncate_metrics(step)

        main = info.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        metrics_file = (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") if main else None
        tb = self._tensorboard() if main and tcfg.tensorboard else None
        eval_every = tcfg.eval_every or steps_per_epoch
        ckpt_every = tcfg.ckpt_every or steps_per_epoch
        self._log(
            info,
            f"{data.source}: {len(data.train)} train / {len(data.val) if data.val else 0} val images; "
            f"{total} steps on {device} x {info.world_size}",
        )

        def write(record: dict) -> None:
            if metrics_file:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
            if tb:
                for k, v in record.items():
                    if "/" in k:
                        tb.add_scalar(k, v, record["step"])

        def save(step: int, val: dict[str, float]) -> None:
            nonlocal best_value
            if not main:
                return
            value = val.get(best_key)
            improved = value is not None and (
                best_value is None or (value > best_value if best_mode == "max" else value < best_value)
            )
            if improved:
                best_value = value
            state = {
                "step": step,
                "best_value": best_value,
                "rng": rng_state(),
                "task": task.state_dict(),
                "health": dict(health),
            }
            meta = {"step": step, "epoch": step / steps_per_epoch, "metrics": val, "best_metric": best_key}
            target = self.ckpt_root / f"step_{step:08d}"
            ckpt.save_checkpoint(target, cfg.to_dict(), task.models, state, meta)
            if improved:
                ckpt.save_checkpoint(self.ckpt_root / "best", cfg.to_dict(), task.models, state, meta)
            ckpt.prune_checkpoints(self.ckpt_root, tcfg.keep_last)

        bar = tqdm(
            total=total,
            initial=step,
            desc=cfg.name,
            disable=not (main and tcfg.progress),
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5,
        )
        window: dict[str, float] = {}
        window_n, window_t, images = 0, time.perf_counter(), 0
        val: dict[str, float] = {}

        def rollback(reason: str) -> int:
            """Restore the newest checkpoint with lower learning rates; returns its step (or raises)."""
            source = ckpt.latest_checkpoint(self.ckpt_root) if main else None
            if info.world_size > 1 or source is None or health["rollbacks"] >= tcfg.max_rollbacks:
                if info.world_size > 1:
                    why = "automatic rollback is not supported in multi-process runs; resume from a checkpoint"
                elif source is None:
                    why = "no checkpoint to roll back to yet"
                else:
                    why = f"{health['rollbacks']} rollback(s) already done (train.max_rollbacks={tcfg.max_rollbacks})"
                raise TrainingError(f"{reason} at step {step}; {why}. Try a lower train.lr or train.grad_clip")
            state = ckpt.load_state(source)
            ckpt.load_models(source, task.models)
            task.load_state_dict(state["task"])
            saved_scale = state.get("health", {}).get("lr_scale", 1.0)
            health["rollbacks"] += 1
            health["lr_scale"] *= tcfg.rollback_lr_factor
            task.scale_learning_rates(health["lr_scale"] / saved_scale)
            set_rng_state(state["rng"])
            seed_everything(cfg.seed + 7919 * health["rollbacks"])  # do not replay the same trajectory
            task.reseed(health["rollbacks"])
            message = (
                f"{reason} at step {step}; rolled back to step {state['step']} with learning rates x"
                f"{health['lr_scale']:.3g} (rollback {health['rollbacks']} of {tcfg.max_rollbacks})"
            )
            bar.write(f"convgen: warning: {message}", file=sys.stderr)
            write({"step": state["step"], "event": "rollback", "at_step": step, "reason": reason})
            return state["step"]

        while step < total:
            epoch, start = divmod(step, steps_per_epoch)
            restart = False
            for batch in loader.batches(epoch, start):
                out = task.train_step(batch, step)
                step += 1
                images += batch[0].shape[0] * info.world_size
                if not all(math.isfinite(v) for v in out.values()):
                    bad = ", ".join(f"{k} {v}" for k, v in out.items() if not math.isfinite(v))
                    step = rollback(f"non-finite training values ({bad})")
                    restart = True
                    break
                for k, v in out.items():
                    window[k] = window.get(k, 0.0) + v
                window_n += 1
                bar.update(1)
                if tcfg.max_minutes and time.perf_counter() - t_start >= tcfg.max_minutes * 60:
                    total = step  # time budget spent: this step validates, checkpoints and ends the run
                if step % tcfg.log_every == 0 or step == total:
                    now = time.perf_counter()
                    avg = mean_across_ranks({k: v / window_n for k, v in window.items()}, info)
                    record = {"step": step, "epoch": round(step / steps_per_epoch, 4)}
                    record.update({f"train/{k}": v for k, v in avg.items()})
                    record["train/images_per_s"] = images / max(now - window_t, 1e-9)
                    write(record)
                    shown = ("loss", "accuracy", "loss_d", "loss_g")
                    bar.set_postfix({k: f"{v:.4g}" for k, v in avg.items() if k in shown})
                    window, window_n, window_t, images = {}, 0, now, 0
                evaluate_now = step % eval_every == 0 or step == total
                if evaluate_now or step % ckpt_every == 0:
                    for module in task.models.values():
                        sync_buffers(module, info)
                if evaluate_now:
                    task.current_step = step
                    val = {f"val/{k}": v for k, v in task.evaluate().items()} if main else {}
                    if val:
                        write({"step": step, "epoch": round(step / steps_per_epoch, 4), **val})
                        bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in val.items()), file=sys.stderr)
                    problem = task.health(val, step) if main else None
                    if problem is None and not _finite_models(task):
                        problem = "non-finite network weights"
                    if problem is not None:
                        step = rollback(problem)
                        restart = True
                        break
                if step % ckpt_every == 0 or step == total:
                    if not evaluate_now and not _finite_models(task):  # an evaluation has just checked them
                        step = rollback("non-finite network weights")
                        restart = True
                        break
                    save(step, val)
                    barrier(info)
                if step >= total:
                    break
            if restart:
                bar.reset(total=total)
                bar.update(step)
                window, window_n, window_t, images = {}, 0, time.perf_counter(), 0
        bar.close()
        if metrics_file:
            metrics_file.close()
        if tb:
            tb.close()
        if main:
            self._finish(task, best_key, best_value)
        barrier(info)
        return TrainResult(self.run_dir, step, best_key, best_value, val, time.perf_counter() - t_start)

    def _finish(self, task: Task, best_key: str, best_value: float | None) -> None:
        from convgen.viz.curves import plot_curves

        best = self.ckpt_root / "best"
        source = best if best.is_dir() else ckpt.latest_checkpoint(self.ckpt_root)
        if source is not None and task.export_models:
            ckpt.export_model(
                source,
                self.run_dir / "model",
                list(task.export_models),
                {
                    "exported_from": source.name,
                    "best_metric": best_key,
                    "best_value": best_value,
                    "class_names": task.data.class_names,
                },
            )
            ckpt.load_models(source, task.models)  # pictures show the exported (best) weights
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

    @staticmethod
    def _log(info: DistInfo, message: str) -> None:
        if info.is_main:
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
