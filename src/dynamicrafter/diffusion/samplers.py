"""The samplers by name: each is a pure function ``sample(denoiser, z_T, schedule, timesteps, eta, generator,
callback) -> z_0`` over the ascending list of sampled timesteps (:mod:`dynamicrafter.diffusion.timesteps`). Their
names, for the option checks, are :data:`dynamicrafter.options.SAMPLER_NAMES`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from dynamicrafter.diffusion.ddim import sample_ddim
from dynamicrafter.diffusion.dpm_solver import sample_dpmpp_2m
from dynamicrafter.diffusion.unipc import sample_unipc
from dynamicrafter.options import SAMPLER_NAMES

Sampler = Callable[..., object]

SAMPLERS: Mapping[str, Sampler] = MappingProxyType({
    "ddim": sample_ddim,  # the released sampler (Song et al. 2021), with dynamic rescale
    "dpmpp_2m": sample_dpmpp_2m,  # DPM-Solver++(2M) (Lu et al. 2022), deterministic
    "unipc": sample_unipc,  # UniPC-2, bh2 (Zhao et al. 2023), deterministic
})
if tuple(SAMPLERS) != SAMPLER_NAMES:
    raise ImportError(f"dynamicrafter.options.SAMPLER_NAMES {SAMPLER_NAMES} differ from the samplers {tuple(SAMPLERS)}")

__all__ = ["SAMPLERS", "Sampler"]
