"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models"),
order 2, B(h) = e^{-h} - 1 ("bh2", the variant for guided sampling), data prediction.

On the grid of :mod:`dynamicrafter.diffusion.ode` (alpha_k, sigma_k, lambda_k, u_k = x0_hat / s_k, which carries the
released dynamic rescale), every step writes z_{k+1} = (sigma_{k+1} / sigma_k) z_k + alpha_{k+1} phi_k D with
phi_k = 1 - e^{-h_k} and a data prediction D:

    UniP-2 (predictor; the same step as DPM-Solver++(2M)):
        D = u_k + rho_p D1,   D1 = (u_{k-1} - u_k) / r,   r = (lambda_{k-1} - lambda_k) / h_k,   rho_p = 1/2
    UniC-p (corrector, once u_{k+1} is known at the predicted z_{k+1}: no extra network call), again from z_k:
        p = 1:  D = u_k + rho (u_{k+1} - u_k),                   rho = 1/2 (b_1 to first order in h, as published)
        p = 2:  D = u_k + rho_1 D1 + rho_2 (u_{k+1} - u_k),      [[1, 1], [r, 1]] (rho_1, rho_2) = (b_1, b_2)
    with (hh = -h, B(h) = e^{hh} - 1, phi_1 = (e^{hh} - 1) / hh - 1):
        b_1 = phi_1 / B(h),   b_2 = 2 (phi_1 / hh - 1/2) / B(h)

The corrected z_{k+1} replaces the predicted one; u_{k+1} (taken at the predicted point) is the history, as in the
paper. The first step and the last (diffusers' ``lower_order_final``) are first order; the corrector of a step takes
that step's order. Zero terminal SNR: from the zero-SNR point h = inf and the order-1 corrector weight is its limit
b_1(inf) = 1 (z_1 = sigma_1 z_0 + alpha_1 u_1: the pure-noise point's x0 prediction, the data mean, has no weight
in the exact integral); such a point is never history. Deterministic: ``eta`` and ``generator`` are not used.
"""

from __future__ import annotations

import math

import torch

from dynamicrafter.diffusion.ddim import Denoiser, StepCallback
from dynamicrafter.diffusion.ode import ode_grid
from dynamicrafter.diffusion.schedule import NoiseSchedule


def corrector_weights(h: float, r: float | None) -> tuple[float, float]:
    """UniC's (rho_1, rho_2): the weights of D1 and of u_{k+1} - u_k; order 1 (rho_1 = 0) when ``r`` is None."""
    if r is None:
        return 0.0, (1.0 if math.isinf(h) else 0.5)
    hh = -h
    b_h = math.expm1(hh)  # B(h), bh2
    phi = math.expm1(hh) / hh - 1.0
    b1 = phi / b_h
    b2 = 2.0 * (phi / hh - 0.5) / b_h
    rho_1 = (b1 - b2) / (1.0 - r)  # [[1, 1], [r, 1]] (rho_1, rho_2) = (b1, b2)
    return rho_1, b1 - rho_1


@torch.no_grad()
def sample_unipc(denoiser: Denoiser, z_T: torch.Tensor, schedule: NoiseSchedule, timesteps: list[int],
                 eta: float = 0.0, generator: torch.Generator | None = None,
                 callback: StepCallback | None = None) -> torch.Tensor:
    """Run UniPC-2 (bh2) from ``z_T`` over ``timesteps`` (ascending; sampled in reverse) and return z_0."""
    del eta, generator  # an ODE solver: deterministic
    grid = ode_grid(schedule, timesteps)
    n = grid.num_steps
    z = z_T
    z_prev = u_prev = u_prev2 = r_prev = None  # z_{k-1}, u_{k-1}, u_{k-2}, the predictor ratio of step k-1
    corrected = False
    for k in range(n):
        t = grid.timesteps[k]
        u = grid.data_prediction(schedule, z, k, denoiser(z, torch.full((z.shape[0],), t, device=z.device)))
        if corrected:  # UniC on the step k-1 -> k
            rho_1, rho_2 = corrector_weights(grid.h(k - 1), r_prev)
            d = u_prev + rho_2 * (u - u_prev)
            if r_prev is not None:
                d = d + rho_1 * (u_prev2 - u_prev) / r_prev
            z = grid.first_order(z_prev, k - 1, d)
        r = grid.history_ratio(k, u_prev is not None) if k < n - 1 else None
        d = u if r is None else u + 0.5 * (u_prev - u) / r  # UniP-2
        z_prev, u_prev2, u_prev, r_prev = z, u_prev, u, r
        z = grid.first_order(z, k, d)
        corrected = True
        if callback is not None:
            replaced = callback(k, t, z, u * grid.scale[k + 1])
            if replaced is not None:
                z, corrected = replaced, False  # keep the caller's latents: no correction of this step
    return z


__all__ = ["corrector_weights", "sample_unipc"]
