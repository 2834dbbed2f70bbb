"""convgen: CNN image generation and restoration — train, sample, restore, evaluate.

Quick use::

    import convgen
    clf = convgen.load("mnist-classifier")          # a zoo model, or a saved model directory
    clf.classify_files("digits/")                    # {"file.png": 7, ...}
    convgen.train("configs/classification/mnist-classifier.yaml", out="runs/mnist")

Submodules are imported on first use, so ``import convgen`` stays fast and an optional dependency that is
missing only affects the feature that needs it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load", "train", "load_config", "average_models", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "load":
        from convgen.pipelines import load

        return load
    if name == "train":
        from convgen.engine.trainer import train

        return train
    if name == "average_models":
        from convgen.modeldir import average

        return average
    if name == "load_config":
        from convgen.config import load_config

        return load_config
    raise AttributeError(f"module 'convgen' has no attribute {name!r}")
