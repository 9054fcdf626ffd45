"""DDIM sampling (Song et al. 2021) as the released sampler computes it, including dynamic rescale.

One step from t to the previous sampled timestep t' (a = alpha_bar):

    z0_hat = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)            (eps-prediction)
           =  sqrt(a_t) z_t - sqrt(1 - a_t) v                   (v-prediction)
    eps    =  sqrt(a_t) v + sqrt(1 - a_t) z_t                   (v-prediction)
    z0_hat *= scale_arr[t'] / scale_arr[t]                      (dynamic rescale; 1 at the last step)
    sigma_t = eta sqrt((1 - a_t') / (1 - a_t) (1 - a_t / a_t'))
    z_t' = sqrt(a_t') z0_hat + sqrt(1 - a_t' - sigma_t^2) eps + sigma_t noise

The last step uses a_t' = alpha_bar[0] (not 1), as released.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dynamicrafter.diffusion.schedule import NoiseSchedule
from dynamicrafter.utils import randn

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z_t, t (b,)) -> eps or v prediction
# (step index, t, z_t', z0_hat) -> None, or a tensor that replaces z_t'
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor | None]

def ddim_coefficients(schedule: NoiseSchedule, timesteps: list[int], eta: float) -> dict[str, torch.Tensor]:
    """Per-step float32 coefficients a_t, a_t', sigma_t (and the dynamic rescale ratio), indexed like timesteps."""
    ts = torch.tensor(timesteps, dtype=torch.long)
    a = schedule.alphas_cumprod[ts]  # float32
    a_prev = torch.cat([schedule.alphas_cumprod[:1], schedule.alphas_cumprod[ts[:-1]]])
    a64, a_prev64 = a.double(), a_prev.double()
    sigma = (eta * torch.sqrt((1 - a_prev64) / (1 - a64) * (1 - a64 / a_prev64))).float()
    coeffs = {"a": a, "a_prev": a_prev, "sigma": sigma, "sqrt_one_minus_a": torch.sqrt(1.0 - a)}
    if schedule.scale_arr is not None:
        scale = schedule.scale_arr[ts]
        scale_prev = torch.cat([scale[:1], scale[:-1]])
        coeffs["rescale"] = scale_prev / scale
    return coeffs


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, z_T: torch.Tensor, schedule: NoiseSchedule, timesteps: list[int],
                eta: float = 1.0, generator: torch.Generator | None = None,
                callback: StepCallback | None = None) -> torch.Tensor:
    """Run DDIM from ``z_T`` over ``timesteps`` (ascending; sampled in reverse) and return z_0.

    ``denoiser(z_t, t)`` returns the (already guided) model output in the schedule's parameterization. The state
    stays in ``z_T``'s dtype (float32 recommended; the denoiser casts to the network's dtype).
    """
    c = ddim_coefficients(schedule, timesteps, eta)
    device, dtype = z_T.device, z_T.dtype
    c = {k: v.to(device) for k, v in c.items()}
    z = z_T
    b = z.shape[0]
    for i in reversed(range(len(timesteps))):
        t = torch.full((b,), timesteps[i], device=device, dtype=torch.long)
        out = denoiser(z, t)
        if schedule.parameterization == "v":
            eps = schedule.eps_from_v(z, t, out)
            z0 = schedule.x0_from_v(z, t, out)
        else:
            eps = out
            z0 = (z - c["sqrt_one_minus_a"][i] * eps) / c["a"][i].sqrt()
        if "rescale" in c:
            z0 = z0 * c["rescale"][i]
        # clamped at 0: on a zero-terminal-SNR schedule with eta = 1 the first step has 1 - a_t' - sigma_t^2 = 0,
        # which float32 can round to -6e-8 (25 trailing steps): a NaN video in the released code
        direction = (1.0 - c["a_prev"][i] - c["sigma"][i] ** 2).clamp(min=0.0).sqrt() * eps
        z = c["a_prev"][i].sqrt() * z0 + direction
        if eta > 0:
            z = z + c["sigma"][i] * randn(z.shape, generator, device, dtype)
        if callback is not None:
            replaced = callback(len(timesteps) - 1 - i, timesteps[i], z, z0)
            if replaced is not None:
                z = replaced
    return z
