"""Diffusion maths shared by the training task and the pipeline: noise schedules (:mod:`.schedule`) and the
reverse-process samplers (:mod:`.samplers`: DDPM ancestral, DDIM, classifier-free guidance, RePaint inpainting,
denoising by entering the reverse process). Pure tensor functions: no networks, files or configs here; a model is
passed in as a callable ``denoiser(x_t, t) -> prediction``.
"""

from convgen.diffusion.samplers import (
    ImageNoise,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    denoise_from,
    distilled_grid,
    guided_predictor,
    image_seeds,
    repaint_cost,
    repaint_sample,
    repaint_schedule,
    step_grid,
)
from convgen.diffusion.schedule import NoiseSchedule

__all__ = [
    "ImageNoise",
    "NoiseSchedule",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_sample",
    "ddpm_step",
    "denoise_from",
    "distilled_grid",
    "guided_predictor",
    "image_seeds",
    "repaint_cost",
    "repaint_sample",
    "repaint_schedule",
    "step_grid",
]
