"""The probability-flow ODE that the multistep samplers (DPM-Solver++, UniPC) integrate, in data-prediction form.

The ODE is solved between the points of a grid: the sampled timesteps in sampling order t_0 > t_1 > ... > t_{N-1}
(k = 0 is the noisiest) and an end point k = N at alpha_bar_0 (where DDIM's last step ends, as released). At point k,
with a_k = alpha_bar_{t_k} and s_k the dynamic-rescale factor (1 without it):

    alpha_k = sqrt(a_k) s_k,   sigma_k = sqrt(1 - a_k),   lambda_k = log(alpha_k / sigma_k)   (half log-SNR)
    u_k = x0_hat(z_k, t_k) / s_k                                                            (data prediction)

Dynamic rescale: the released 512 / 1024 models are trained on z_t = sqrt(a_t) s_t z_0 + sigma_t eps (the clean
latents multiplied by ``scale_arr[t]``), so their x0_hat estimates s_t z_0: their marginals are those of a schedule
with alpha_t = sqrt(a_t) s_t, and u = x0_hat / s_t estimates z_0 itself. The released DDIM step, which multiplies
x0_hat by s_{t'} / s_t, is exactly the first-order step below on that schedule. The end point has
s_N = ``scale_arr[0]`` = 1 (the marginal at t = 0); the released DDIM keeps s of its smallest sampled timestep there
(its last ratio is 1: 0.986 at 50 trailing steps, 0.85 at 5), see :func:`ode_grid`.

Exact solution from point k to k + 1 (variation of constants, Lu et al. 2022 eq. (9)), h_k = lambda_{k+1} - lambda_k:

    z_{k+1} = (sigma_{k+1} / sigma_k) z_k + sigma_{k+1} int_{lambda_k}^{lambda_{k+1}} e^lambda u(lambda) dlambda
    u constant (first order = DDIM eta 0):  z_{k+1} = (sigma_{k+1} / sigma_k) z_k + alpha_{k+1} phi_k u_k,
    phi_k = 1 - e^{-h_k} = 1 - sigma_{k+1} alpha_k / (alpha_{k+1} sigma_k)

Zero terminal SNR (alpha_bar_{T-1} = 0, the first point of trailing spacing): alpha_0 = 0, sigma_0 = 1,
lambda_0 = -inf, so h_0 = +inf and phi_0 = 1: the first step is z_1 = sigma_1 z_0 + alpha_1 u_0, finite. phi is
computed from alpha and sigma (no infinite lambda in it). A point of infinite h is never used as multistep history
(:meth:`OdeGrid.ratio` returns None there: the limit of the higher-order terms is 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dynamicrafter.diffusion.schedule import NoiseSchedule
from dynamicrafter.errors import ConfigError


@dataclass(frozen=True)
class OdeGrid:
    """The grid points k = 0 .. N (float64 numbers); ``timesteps[k]`` is the network's t at points k < N."""

    timesteps: tuple[int, ...]  # sampling order (descending)
    root_a: tuple[float, ...]  # sqrt(a_k)
    alpha: tuple[float, ...]  # alpha_k = sqrt(a_k) s_k
    sigma: tuple[float, ...]  # sigma_k = sqrt(1 - a_k)
    scale: tuple[float, ...]  # s_k
    lam: tuple[float, ...]  # lambda_k (-inf at a zero-SNR point)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def h(self, k: int) -> float:
        """h_k = lambda_{k+1} - lambda_k (+inf from a zero-SNR point)."""
        return self.lam[k + 1] - self.lam[k]

    def phi(self, k: int) -> float:
        """phi_k = 1 - e^{-h_k} in [0, 1] (1 from a zero-SNR point)."""
        return 1.0 - self.sigma[k + 1] * self.alpha[k] / (self.alpha[k + 1] * self.sigma[k])

    def ratio(self, k: int, j: int) -> float | None:
        """r = (lambda_j - lambda_k) / h_k for an earlier point j < k, None where lambda_j = -inf (zero SNR: the
        point carries no usable history)."""
        if not math.isfinite(self.lam[j]):
            return None
        return (self.lam[j] - self.lam[k]) / self.h(k)

    def history_ratio(self, k: int, has_history: bool) -> float | None:
        """r = (lambda_{k-1} - lambda_k) / h_k when u_{k-1} is usable history, else None (a first-order step)."""
        return self.ratio(k, k - 1) if has_history and k > 0 else None

    def first_order(self, z: torch.Tensor, k: int, d: torch.Tensor) -> torch.Tensor:
        """z_{k+1} = (sigma_{k+1} / sigma_k) z_k + alpha_{k+1} phi_k d, for a data prediction d (u_k: DDIM)."""
        return (self.sigma[k + 1] / self.sigma[k]) * z + (self.alpha[k + 1] * self.phi(k)) * d

    def data_prediction(self, schedule: NoiseSchedule, z: torch.Tensor, k: int, out: torch.Tensor) -> torch.Tensor:
        """u_k = x0_hat / s_k from the network output ``out`` (eps or v) at point k."""
        root_a = self.root_a[k]
        if schedule.parameterization == "v":
            x0 = root_a * z - self.sigma[k] * out  # z_0 = sqrt(a) z_t - sqrt(1 - a) v
        elif root_a == 0.0:
            raise ConfigError(f"an eps-prediction model has no x0 prediction at t = {self.timesteps[k]} "
                              f"(alpha_bar = 0, zero terminal SNR): use v-prediction or 'uniform' timestep spacing")
        else:
            x0 = (z - self.sigma[k] * out) / root_a  # z_0 = (z_t - sqrt(1 - a) eps) / sqrt(a)
        return x0 / self.scale[k]


def ode_grid(schedule: NoiseSchedule, timesteps: list[int]) -> OdeGrid:
    """The grid of ``timesteps`` (ascending, as :func:`~dynamicrafter.diffusion.timesteps.sampling_timesteps`
    gives them) plus the end point at alpha_bar_0 with s = ``scale_arr[0]`` (1)."""
    ts = sorted(timesteps, reverse=True)
    ac = schedule.alphas_cumprod.double()
    a = [float(ac[t]) for t in ts] + [float(ac[0])]
    if schedule.scale_arr is None:
        s = [1.0] * len(a)
    else:
        s = [float(schedule.scale_arr[t]) for t in ts] + [float(schedule.scale_arr[0])]
    root_a = tuple(math.sqrt(ak) for ak in a)
    alpha = tuple(ra * sk for ra, sk in zip(root_a, s))
    sigma = tuple(math.sqrt(1.0 - ak) for ak in a)
    lam = tuple(math.log(al) - math.log(si) if al > 0 else -math.inf for al, si in zip(alpha, sigma))
    return OdeGrid(tuple(ts), root_a, alpha, sigma, tuple(s), lam)


__all__ = ["OdeGrid", "ode_grid"]
