"""Launched by tests/test_train.py under torchrun: trains a tiny run with DDP and saves each rank's weights."""

import json
import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from convgen.config import build_config
from convgen.engine.trainer import Trainer

out = Path(sys.argv[1])
cfg = build_config(json.loads(sys.argv[2]))
trainer = Trainer(cfg, out / "run")
trainer.fit()
state = {k: v.contiguous() for k, v in trainer.task.models["classifier"].state_dict().items()}
save_file(state, str(out / f"rank{os.environ['RANK']}.safetensors"))
