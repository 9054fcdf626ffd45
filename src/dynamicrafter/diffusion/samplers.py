"""The samplers by name: each is a pure function ``sample(denoiser, z_T, schedule, timesteps, eta, generator,
callback) -> z_0`` over the ascending list of sampled timesteps (see :mod:`dynamicrafter.diffusion.ddim`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from dynamicrafter.diffusion.ddim import sample_ddim

Sampler = Callable[..., object]

SAMPLERS: Mapping[str, Sampler] = MappingProxyType({
    "ddim": sample_ddim,  # the released sampler (Song et al. 2021), with dynamic rescale
})

__all__ = ["SAMPLERS", "Sampler"]
