"""Inference: a saved model's pipeline (``convgen.load``), one module per kind of job.

``base`` (the dispatch through ``PIPELINES``), ``classify``, ``sample`` (the one Sampler API for generators),
``restore`` (image-to-image, with ``tiling``), ``vae``, ``diffusion``, ``codec``, ``style``. The registry imports
every module of this package on its first lookup (``registry.import_package``), so a module registers by being
here; the names below are the public API, not a registration list.
"""

from convgen.pipelines.base import Pipeline, load
from convgen.pipelines.classify import ClassifierPipeline
from convgen.pipelines.diffusion import DiffusionPipeline
from convgen.pipelines.restore import RestorationPipeline, RestorePipeline
from convgen.pipelines.sample import GANSampler, Sampler
from convgen.pipelines.style import Gatys, StylePipeline

__all__ = [
    "ClassifierPipeline",
    "DiffusionPipeline",
    "GANSampler",
    "Gatys",
    "Pipeline",
    "RestorationPipeline",
    "RestorePipeline",
    "Sampler",
    "StylePipeline",
    "load",
]
