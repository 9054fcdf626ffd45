"""Diffusion math, kept apart from the networks: noise schedule and training targets, DDIM, guidance."""

from dynamicrafter.diffusion.ddim import ddim_timesteps, sample_ddim
from dynamicrafter.diffusion.guidance import classifier_free_guidance, rescale_guidance
from dynamicrafter.diffusion.schedule import NoiseSchedule

__all__ = ["NoiseSchedule", "classifier_free_guidance", "ddim_timesteps", "rescale_guidance", "sample_ddim"]
