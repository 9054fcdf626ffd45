"""Diffusion math, kept apart from the networks: noise schedule and training targets (schedule.py), sampled
timesteps (timesteps.py), samplers (ddim.py; dpm_solver.py and unipc.py on the ODE grid of ode.py; the registry
samplers.py), guidance (guidance.py), the one denoiser (denoiser.py) and sliding temporal windows (windows.py). Names
are imported lazily: ``import dynamicrafter.diffusion.timesteps`` needs numpy only."""

from __future__ import annotations

from dynamicrafter.lazy import lazy_getattr

_LAZY = {
    "NoiseSchedule": "dynamicrafter.diffusion.schedule",
    "classifier_free_guidance": "dynamicrafter.diffusion.guidance",
    "rescale_guidance": "dynamicrafter.diffusion.guidance",
    "Guidance": "dynamicrafter.diffusion.guidance",
    "sample_ddim": "dynamicrafter.diffusion.ddim",
    "sample_dpmpp_2m": "dynamicrafter.diffusion.dpm_solver",
    "sample_unipc": "dynamicrafter.diffusion.unipc",
    "SAMPLERS": "dynamicrafter.diffusion.samplers",
    "sampling_timesteps": "dynamicrafter.diffusion.timesteps",
    "make_denoiser": "dynamicrafter.diffusion.denoiser",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
