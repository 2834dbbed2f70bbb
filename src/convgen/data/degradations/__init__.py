"""Degradations for training and benchmarking restoration networks: one registered class per kind, each with its
own ``Config`` (``task.degradation.kind`` picks it): ``noise``, ``poisson-gaussian``, ``inpaint``, ``superres``,
``jpeg``. A new kind is one new module here with a ``@DEGRADATIONS.register`` class."""

from convgen.data.degradations.base import Degradation, build_degradation_config, make_degradation

__all__ = ["Degradation", "build_degradation_config", "make_degradation"]
