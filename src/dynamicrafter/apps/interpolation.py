"""Generative frame interpolation (two or more keyframes) and looping.

Both use the interpolation form of the VDG input: the latents of the first and the last frame, zeros between
(released ``interp`` model); the context stream (P's tokens) comes from the first frame. A loop is an interpolation
from an image to itself, sampled on a circle: its closing frame shares the first frame's latent and is not saved, so
the saved video plays seamlessly (:func:`loop`).

    out = interpolate_keyframes(pipe, ["a.png", "b.png", "c.png"], ["a man walks", "he turns"])
    save_video(out.frames[0], "walk.mp4")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from dynamicrafter.apps.frames import chain, finish, working_output_type
from dynamicrafter.errors import UserError
from dynamicrafter.pipeline import DynamiCrafterPipeline, ImageInput, OutputType, PipelineOutput


def interpolate(pipe: DynamiCrafterPipeline, start: ImageInput, end: ImageInput, prompt: str = "",
                **kwargs: Any) -> PipelineOutput:
    """Frames from ``start`` to ``end`` (both in the VDG input, the context stream from ``start``).

    ``kwargs`` are the pipeline's (``num_frames``, ``generator``, ``output_type``, ``temporal_windows``, ...).
    """
    return pipe(start, prompt, end_image=end, **kwargs)


def interpolate_keyframes(pipe: DynamiCrafterPipeline, keyframes: Sequence[ImageInput],
                          prompts: str | Sequence[str] = "", *, generator: torch.Generator | None = None,
                          output_type: OutputType = "pil", **kwargs: Any) -> PipelineOutput:
    """One video through N >= 2 keyframes: each consecutive pair is interpolated (segment k from keyframe k to
    k + 1, with ``prompts[k]``, or one prompt for all) and the duplicated boundary frames are removed, so
    N keyframes and T frames per segment give ``(N - 1) * (T - 1) + 1`` frames.

    ``generator`` is used by the segments in order. Returns the frames of one video (batch 1) like the pipeline;
    ``timings`` sums the segments.
    """
    if len(keyframes) < 2:
        raise UserError(f"interpolation needs at least 2 keyframes, got {len(keyframes)}")
    segments = len(keyframes) - 1
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if len(prompt_list) == 1:
        prompt_list *= segments
    if len(prompt_list) != segments:
        raise UserError(f"got {len(prompt_list)} prompts for {len(keyframes)} keyframes: give one prompt, or one per "
                        f"segment ({segments})")
    clips, latents, timings = [], [], {}
    bar = tqdm(total=segments, desc="segments", disable=segments == 1 or pipe.progress_bar_config.get("disable"))
    for k in range(segments):
        out = pipe(keyframes[k], prompt_list[k], end_image=keyframes[k + 1], generator=generator,
                   output_type=working_output_type(output_type), **kwargs)
        clips.append(out.frames)
        latents.append(out.latents)
        for key, value in out.timings.items():
            timings[key] = timings.get(key, 0.0) + value
        bar.update(1)
    bar.close()
    return PipelineOutput(frames=finish(chain(clips), output_type), latents=chain(latents), timings=timings)


def loop(pipe: DynamiCrafterPipeline, image: ImageInput, prompt: str = "", *, output_type: OutputType = "pil",
         closed: bool = True, drop_last_frame: bool = True, **kwargs: Any) -> PipelineOutput:
    """A looping video: ``image`` at both ends of the VDG input (an interpolation from the image to itself).

    ``closed`` (default): the loop is sampled on a circle (the pipeline's ``closed_loop``): the closing frame is the
    first frame's latent itself, so the wrap from the last frame to the first is a step the network takes like any
    other. ``closed=False``: the released way, the closing frame sampled on its own (it only resembles the first).
    With ``drop_last_frame`` (default) the closing frame is left out: the ``num_frames - 1`` frames returned (and
    their latents) play seamlessly when repeated; otherwise it is appended (for a closed loop, a copy of frame 0).
    """
    out = pipe(image, prompt, end_image=image, output_type=working_output_type(output_type), closed_loop=closed,
               **kwargs)
    video, latents = out.frames, out.latents
    if closed and not drop_last_frame:
        video, latents = (torch.cat([x, x[:, :, :1]], dim=2) for x in (video, latents))
    elif not closed and drop_last_frame:
        video, latents = video[:, :, :-1], latents[:, :, :-1]
    return PipelineOutput(frames=finish(video, output_type), latents=latents, timings=out.timings)


__all__ = ["interpolate", "interpolate_keyframes", "loop"]
