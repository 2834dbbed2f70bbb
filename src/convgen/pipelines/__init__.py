"""Inference: a saved model's pipeline (``convgen.load``), one module per kind of job.

``base`` (the dispatch through ``PIPELINES``), ``classify``, ``sample`` (the one Sampler API for generators),
``restore`` (image-to-image, with ``tiling``), ``vae``, ``diffusion``, ``codec``, ``style``. Importing this package
registers them (the registry imports it by name on the first lookup).
"""

from convgen.pipelines import classify, codec, diffusion, restore, sample, style, vae  # noqa: F401  (registers the pipelines)
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
