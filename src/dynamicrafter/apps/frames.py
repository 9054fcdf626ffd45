"""Joining generated clips along time: chaining with the shared boundary frame dropped, and cross-fades.

Clips are tensors ``(b, c, t, h, w)``: decoded frames in [-1, 1] (c = 3) or latents (c = 4).
"""

from __future__ import annotations

from typing import Any

import torch

from dynamicrafter.errors import UserError


def chain(clips: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate clips that share their boundary frame (clip k ends where clip k + 1 starts, e.g. on the same
    keyframe): the first frame of every clip after the first is dropped. Lengths t_1 + sum_{k>1} (t_k - 1)."""
    if not clips:
        raise ValueError("nothing to chain")
    return torch.cat([clips[0]] + [c[:, :, 1:] for c in clips[1:]], dim=2)


def crossfade_concat(clips: list[torch.Tensor], crossfade: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Concatenate clips, blending the last ``crossfade`` frames of each clip with the first ``crossfade`` frames of
    the next (linear weights (j + 1) / (crossfade + 1) for the incoming clip, j = 0 .. crossfade - 1).

    Returns the video, of length ``sum(t_k) - crossfade * (len(clips) - 1)``, and each clip's frame range
    ``[start, stop)`` in it (consecutive ranges overlap by ``crossfade`` frames). ``crossfade=0``: hard cuts.
    """
    if not clips:
        raise ValueError("nothing to concatenate")
    if crossfade < 0:
        raise UserError(f"crossfade must be >= 0 frames, got {crossfade}")
    for k, clip in enumerate(clips):
        sides = (k > 0) + (k < len(clips) - 1)
        if clip.shape[2] <= crossfade * sides:
            raise UserError(f"crossfade {crossfade} is too long for clip {k + 1} of {clip.shape[2]} frames: each clip "
                            f"needs more frames than its cross-faded ones; use crossfade <= "
                            f"{(clip.shape[2] - 1) // max(sides, 1)}")
    video = clips[0]
    ranges = [(0, clips[0].shape[2])]
    weights = torch.arange(1, crossfade + 1, dtype=torch.float32) / (crossfade + 1)  # incoming clip's weight
    for clip in clips[1:]:
        start = video.shape[2] - crossfade
        if crossfade:
            w = weights.to(clip.device, clip.dtype).view(1, 1, -1, 1, 1)
            blended = (1 - w) * video[:, :, start:] + w * clip[:, :, :crossfade]
            video = torch.cat([video[:, :, :start], blended, clip[:, :, crossfade:]], dim=2)
        else:
            video = torch.cat([video, clip], dim=2)
        ranges.append((start, start + clip.shape[2]))
    return video, ranges


def working_output_type(output_type: str) -> str:
    """What to ask the pipeline for when clips are joined before the final conversion."""
    return "latent" if output_type == "latent" else "pt"


def finish(video: torch.Tensor, output_type: str) -> Any:
    """Joined frames (b, 3, t, H, W) in [-1, 1] (or latents for "latent") -> ``output_type`` as the pipeline gives."""
    if output_type == "latent":
        return video
    from dynamicrafter.pipeline import DynamiCrafterPipeline

    return DynamiCrafterPipeline.postprocess(video, output_type)
