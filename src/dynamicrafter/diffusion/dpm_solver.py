"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models", Algorithm 2): the second-order multistep solver of the probability-flow ODE in data-prediction form.

On the grid of :mod:`dynamicrafter.diffusion.ode` (alpha_k, sigma_k, lambda_k, u_k = x0_hat / s_k, which carries the
released dynamic rescale), from point k to k + 1 with h_k = lambda_{k+1} - lambda_k:

    r_k = h_{k-1} / h_k
    D_k = (1 + 1 / (2 r_k)) u_k - 1 / (2 r_k) u_{k-1}                 (linear extrapolation of u in lambda)
    z_{k+1} = (sigma_{k+1} / sigma_k) z_k + alpha_{k+1} (1 - e^{-h_k}) D_k

The first step (no history), a step after a zero-SNR point (h_{k-1} = inf: 1 / (2 r_k) -> 0) and the last step take
D_k = u_k, the DDIM step. The last step ends at alpha_bar_0, a long step in lambda (trailing spacing, 20 steps:
h = 2.1 after h = 0.5, so r = 0.25 and the extrapolation would weigh u_k - u_{k-1} by 2), while near t = 0 u hardly
changes: on the shipped small model (4 held-out inputs, distance of the latents to 250-step DDIM) 15 steps with a
second-order last step ended at 0.077, with a first-order one at 0.050 (10 steps: 0.082). This is diffusers'
``euler_at_final`` (its default does it below 15 steps only). Deterministic: ``eta`` and ``generator`` are not used.
"""

from __future__ import annotations

import torch

from dynamicrafter.diffusion.ddim import Denoiser, StepCallback
from dynamicrafter.diffusion.ode import ode_grid
from dynamicrafter.diffusion.schedule import NoiseSchedule


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, z_T: torch.Tensor, schedule: NoiseSchedule, timesteps: list[int],
                    eta: float = 0.0, generator: torch.Generator | None = None,
                    callback: StepCallback | None = None) -> torch.Tensor:
    """Run DPM-Solver++(2M) from ``z_T`` over ``timesteps`` (ascending; sampled in reverse) and return z_0."""
    del eta, generator  # an ODE solver: deterministic
    grid = ode_grid(schedule, timesteps)
    n = grid.num_steps
    z, u_prev = z_T, None
    for k in range(n):
        t = grid.timesteps[k]
        u = grid.data_prediction(schedule, z, k, denoiser(z, torch.full((z.shape[0],), t, device=z.device)))
        r = grid.history_ratio(k, u_prev is not None)  # (lambda_{k-1} - lambda_k) / h_k = -r_k
        d = u if r is None or k == n - 1 else u + (u - u_prev) / (2.0 * -r)  # D_k
        z = grid.first_order(z, k, d)
        u_prev = u
        if callback is not None:
            replaced = callback(k, t, z, u * grid.scale[k + 1])
            if replaced is not None:
                z = replaced
    return z


__all__ = ["sample_dpmpp_2m"]
