"""Classifier-free guidance: the one place where conditional and unconditional predictions are combined.

Two branches (Ho & Salimans):      e = e_u + s (e_c - e_u)
Three branches (image guidance):   e = e_u + s_img (e_u,img - e_u) + s (e_c - e_u,img)
where e_c = f(text, image), e_u = f("", zero image), e_u,img = f("", image); the VDG latents are kept in all
branches. Guidance rescale (Lin et al. 2024, Sec. 3.4) matches the std of the result to that of e_c:

    e_rescaled = e * std(e_c) / std(e);   e = phi e_rescaled + (1 - phi) e

with std over all non-batch dimensions. For v-prediction these act on v (as released).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    dims = list(range(1, cond.ndim))
    std_cond = cond.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    rescaled = guided * (std_cond / std_guided)
    return phi * rescaled + (1.0 - phi) * guided


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float,
                             uncond_image: torch.Tensor | None = None, image_scale: float | None = None,
                             guidance_rescale: float = 0.0) -> torch.Tensor:
    """Combine branch predictions (see module docstring)."""
    if uncond_image is None:
        guided = uncond + scale * (cond - uncond)
    else:
        image_scale = scale if image_scale is None else image_scale
        guided = uncond + image_scale * (uncond_image - uncond) + scale * (cond - uncond_image)
    if guidance_rescale > 0.0:
        guided = rescale_guidance(guided, cond, guidance_rescale)
    return guided


def guided(model_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], num_branches: int, scale: float,
           image_scale: float | None = None, guidance_rescale: float = 0.0
           ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Wrap a batched model into a guided denoiser.

    ``model_fn(z, t, n)`` evaluates all branches in one batch: given z (b, ...) it returns (n*b, ...) predictions
    ordered [cond; uncond; (uncond_image)]. With one branch (no guidance) the prediction is returned as is.
    """

    def denoise(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model_fn(z, t, num_branches)
        if num_branches == 1:
            return out
        branches: Sequence[torch.Tensor] = out.chunk(num_branches)
        return classifier_free_guidance(branches[0], branches[1], scale,
                                        branches[2] if num_branches == 3 else None, image_scale, guidance_rescale)

    return denoise
