"""``convgen train``: train a model from a config."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from convgen.errors import ConvgenError


def _cmd_train(args: argparse.Namespace) -> int:
    from convgen.engine.trainer import train

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml", ".json")):
        config, overrides = None, [config, *overrides]  # only overrides given (resuming a run)
    out = args.out
    if out is None:
        if config is None:
            raise ConvgenError("--out is required when resuming")
        out = str(Path("runs") / Path(config).stem)
    result = train(config, out, overrides, resume=args.resume)
    summary = {
        "run_dir": str(result.run_dir),
        "steps": result.step,
        "best_metric": result.best_metric,
        "best_value": result.best_value,
        "final_metrics": result.final_metrics,
        "seconds": round(result.seconds, 1),
    }
    if args.json:
        print(json.dumps(summary))
    elif result.step:
        print(
            f"trained {result.step} steps in {result.seconds:.0f} s; best {result.best_metric} = "
            f"{result.best_value}; model saved in {result.run_dir / 'model'}",
            file=sys.stderr,
        )
    return 0


def add_commands(sub) -> None:
    t = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train from a config (configs/*.yaml) with key.sub=value overrides, e.g. "
        "`convgen train configs/classification/mnist-classifier.yaml train.epochs=2 --out runs/x`. "
        "Multi-process: `torchrun --nproc_per_node 2 -m convgen train ...`.",
    )
    t.add_argument("config", nargs="?", help="YAML config file (optional when resuming a run)")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.lr=0.01")
    t.add_argument("--out", help="run directory (default: runs/<config name>)")
    t.add_argument("--resume", metavar="latest|CKPT", help="continue from the latest checkpoint in --out, or a path")
    t.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    t.set_defaults(func=_cmd_train)

