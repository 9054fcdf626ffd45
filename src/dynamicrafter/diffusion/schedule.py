"""The DDPM noise schedule of DynamiCrafter, its parameterizations (eps, v) and the training objective.

Notation (DDPM / DDIM papers): ``a_t = alpha_bar_t = prod_{s<=t} (1 - beta_s)``;
``z_t = sqrt(a_t) z_0 + sqrt(1 - a_t) eps``; ``v = sqrt(a_t) eps - sqrt(1 - a_t) z_0`` (Salimans & Ho).
The schedule is computed in float64 and stored in float32, as the released code stores its buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dynamicrafter.config import ScheduleConfig


def scaled_linear_betas(num_timesteps: int, linear_start: float, linear_end: float) -> torch.Tensor:
    """beta_t = (linspace(sqrt(start), sqrt(end), T))^2, float64 (the "linear" schedule of LDM)."""
    return torch.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=torch.float64, device="cpu") ** 2


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(a_t) so that a_T = 0 while a_0 is kept (Lin et al. 2024, Algorithm 1), float64."""
    sqrt_ac = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_ac[0].clone(), sqrt_ac[-1].clone()
    sqrt_ac = (sqrt_ac - last) * first / (first - last)
    ac = sqrt_ac**2
    alphas = torch.cat([ac[:1], ac[1:] / ac[:-1]])
    return 1.0 - alphas


def dynamic_rescale_factors(num_timesteps: int, base_scale: float, turning_step: int) -> torch.Tensor:
    """The released ``scale_arr``: linspace(1, base_scale, turning_step) followed by T values of base_scale."""
    head = torch.linspace(1.0, base_scale, turning_step, dtype=torch.float64, device="cpu")
    return torch.cat([head, torch.full((num_timesteps,), base_scale, dtype=torch.float64, device="cpu")]).float()


def _gather(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] shaped (b, 1, ..., 1) for broadcasting against an ndim tensor."""
    return values.to(t.device)[t].view(-1, *([1] * (ndim - 1)))


@dataclass
class NoiseSchedule:
    """Precomputed schedule tensors (float32, always on the CPU, also when the networks are built on the meta
    device; moved to the data's device on use)."""

    config: ScheduleConfig
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    scale_arr: torch.Tensor | None  # dynamic rescale factors (512/1024 models), None when unused

    @classmethod
    def from_config(cls, config: ScheduleConfig) -> NoiseSchedule:
        betas = scaled_linear_betas(config.num_timesteps, config.linear_start, config.linear_end)
        if config.rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        ac = torch.cumprod(1.0 - betas, dim=0)  # float64
        scale_arr = None
        if config.use_dynamic_rescale:
            scale_arr = dynamic_rescale_factors(config.num_timesteps, config.base_scale, config.turning_step)
        return cls(config, betas.float(), ac.float(), ac.sqrt().float(), (1.0 - ac).sqrt().float(), scale_arr)

    @property
    def num_timesteps(self) -> int:
        return self.config.num_timesteps

    @property
    def parameterization(self) -> str:
        return self.config.parameterization

    # -------------------------------------------------------------------------------------------------------------
    # Forward process and conversions between predictions
    # -------------------------------------------------------------------------------------------------------------

    def q_sample(self, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z_t = sqrt(a_t) z_0 + sqrt(1 - a_t) eps."""
        return (_gather(self.sqrt_alphas_cumprod, t, z0.ndim) * z0
                + _gather(self.sqrt_one_minus_alphas_cumprod, t, z0.ndim) * noise)

    def velocity(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = sqrt(a_t) eps - sqrt(1 - a_t) z_0."""
        return (_gather(self.sqrt_alphas_cumprod, t, z0.ndim) * noise
                - _gather(self.sqrt_one_minus_alphas_cumprod, t, z0.ndim) * z0)

    def eps_from_v(self, z_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """eps = sqrt(a_t) v + sqrt(1 - a_t) z_t."""
        return (_gather(self.sqrt_alphas_cumprod, t, z_t.ndim) * v
                + _gather(self.sqrt_one_minus_alphas_cumprod, t, z_t.ndim) * z_t)

    def x0_from_v(self, z_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """z_0 = sqrt(a_t) z_t - sqrt(1 - a_t) v."""
        return (_gather(self.sqrt_alphas_cumprod, t, z_t.ndim) * z_t
                - _gather(self.sqrt_one_minus_alphas_cumprod, t, z_t.ndim) * v)

    # -------------------------------------------------------------------------------------------------------------
    # Training objective
    # -------------------------------------------------------------------------------------------------------------

    def training_inputs(self, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_t, target) for the simple loss ``|| f(z_t, t) - target ||^2``.

        With dynamic rescale the clean latents are first multiplied by ``scale_arr[t]`` (as released); the target
        is eps or v according to the parameterization.
        """
        if self.scale_arr is not None:
            z0 = z0 * _gather(self.scale_arr, t, z0.ndim)
        z_t = self.q_sample(z0, t, noise)
        target = noise if self.parameterization == "eps" else self.velocity(z0, noise, t)
        return z_t, target
