"""Copy a finished run's exported model into the bundled zoo (src/convgen/zoo/NAME).

    python scripts/package_zoo.py NAME RUN_DIR [--networks generator_ema] [--metric key=value ...]

Only the listed networks are copied (for GANs the EMA generator is all that sampling needs). ``--metric`` values
are stored in meta.json as ``card_metrics`` (what ``convgen zoo list`` shows); the MODEL_CARD.md is written by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

ZOO = Path(__file__).resolve().parents[1] / "src" / "convgen" / "zoo"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("run", type=Path)
    p.add_argument("--networks", nargs="+", required=True)
    p.add_argument("--metric", action="append", default=[])
    args = p.parse_args()
    src = args.run / "model"
    dest = ZOO / args.name
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "config.json", dest / "config.json")
    for net in args.networks:
        shutil.copy2(src / f"{net}.safetensors", dest / f"{net}.safetensors")
    meta = json.loads((src / "meta.json").read_text())
    card = {}
    for item in args.metric:
        key, value = item.split("=", 1)
        card[key] = json.loads(value)
    meta["card_metrics"] = card
    meta["files"] = {  # checked on every load: a damaged weights file is an error, not a different model
        f"{net}.safetensors": hashlib.sha256((dest / f"{net}.safetensors").read_bytes()).hexdigest()
        for net in args.networks
    }
    (dest / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(dest)


if __name__ == "__main__":
    main()
