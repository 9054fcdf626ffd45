"""Classifier-free guidance: the one place where conditional and unconditional predictions are combined.

Two branches (Ho & Salimans):      e = e_u + s (e_c - e_u)
Three branches (image guidance):   e = e_u + s_img (e_u,img - e_u) + s (e_c - e_u,img)
where e_c = f(text, image), e_u = f("", zero image), e_u,img = f("", image); the VDG latents are kept in all
branches. Guidance rescale (Lin et al. 2024, Sec. 3.4) matches the std of the result to that of e_c:

    e_rescaled = e * std(e_c) / std(e);   e = phi e_rescaled + (1 - phi) e

with std over all non-batch dimensions. For v-prediction these act on v (as released).
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Guidance:
    """Guidance settings of one sampling run: ``scale`` s (text), ``image_scale`` s_img (a third branch when set),
    ``rescale`` phi. With s = 1 there is one branch and no guidance (as released)."""

    scale: float = 1.0
    image_scale: float | None = None
    rescale: float = 0.0

    @property
    def num_branches(self) -> int:
        """1 (conditional only), 2 (+ unconditional) or 3 (+ unconditional text with the image)."""
        if self.scale == 1.0:
            return 1
        return 3 if self.image_scale is not None else 2

    def combine(self, predictions: torch.Tensor) -> torch.Tensor:
        """Predictions of every branch, stacked along the batch [cond; uncond; (uncond_image)] (n*b, ...) -> the
        guided prediction (b, ...)."""
        n = self.num_branches
        if n == 1:
            return predictions
        branches = predictions.chunk(n)
        return classifier_free_guidance(branches[0], branches[1], self.scale, branches[2] if n == 3 else None,
                                        self.image_scale, self.rescale)
