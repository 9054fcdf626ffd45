"""Generative frame interpolation (two or more keyframes) and looping.

Interpolation uses the interpolation form of the VDG input: the latents of the first and the last frame, zeros
between (released ``interp`` model); the context stream (P's tokens) comes from the first frame. A loop is either an
animation of the image on a circular timeline (``ring``, image-to-video models) or an interpolation from the image to
itself whose closing frame shares the first frame's latent (``closed``, interpolation models); either way the saved
video plays seamlessly (:func:`loop`).

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
from dynamicrafter.options import LOOP_METHODS, SamplingOptions
from dynamicrafter.pipeline import DynamiCrafterPipeline, ImageInput, OutputType, PipelineOutput


def interpolate(pipe: DynamiCrafterPipeline, start: ImageInput, end: ImageInput, prompt: str = "",
                options: SamplingOptions | None = None, **kwargs: Any) -> PipelineOutput:
    """Frames from ``start`` to ``end`` (both in the VDG input, the context stream from ``start``).

    ``kwargs`` are the pipeline's (``generator``, ``output_type``, sampling options such as ``num_frames`` ...).
    """
    return pipe(start, prompt, options, end_image=end, **kwargs)


def interpolate_keyframes(pipe: DynamiCrafterPipeline, keyframes: Sequence[ImageInput],
                          prompts: str | Sequence[str] = "", options: SamplingOptions | None = None, *,
                          generator: torch.Generator | None = None, output_type: OutputType = "pil",
                          **kwargs: Any) -> PipelineOutput:
    """One video through N >= 2 keyframes: each consecutive pair is interpolated (segment k from keyframe k to
    k + 1, with ``prompts[k]``, or one prompt for all) and the duplicated boundary frames are removed, so
    N keyframes and T frames per segment give ``(N - 1) * (T - 1) + 1`` frames.

    ``generator`` (or one seeded by ``options.seed``) is used by the segments in order. Returns the frames of one
    video (batch 1) like the pipeline; ``timings`` sums the segments.
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
    if generator is None and options is not None and options.seed is not None:
        generator = torch.Generator().manual_seed(options.seed)
    clips, latents, timings = [], [], {}
    bar = tqdm(total=segments, desc="segments", disable=segments == 1 or pipe.progress_bar_config.get("disable"))
    for k in range(segments):
        out = pipe(keyframes[k], prompt_list[k], options, end_image=keyframes[k + 1], generator=generator,
                   output_type=working_output_type(output_type), **kwargs)
        clips.append(out.frames)
        latents.append(out.latents)
        for key, value in out.timings.items():
            timings[key] = timings.get(key, 0.0) + value
        bar.update(1)
    bar.close()
    return PipelineOutput(frames=finish(chain(clips), output_type), latents=chain(latents), timings=timings)


def default_loop_method(interp_model: bool) -> str:
    """"closed" for interpolation models (their VDG input is always a first and a last frame), else "ring"."""
    return "closed" if interp_model else "ring"


def loop_length(method: str, num_frames: int) -> int:
    """Frames a loop of ``num_frames`` returns with its closing frame dropped (the ring samples no closing frame)."""
    return num_frames if method == "ring" else num_frames - 1


def loop(pipe: DynamiCrafterPipeline, image: ImageInput, prompt: str = "", options: SamplingOptions | None = None,
         *, method: str | None = None, output_type: OutputType = "pil", drop_last_frame: bool = True,
         **kwargs: Any) -> PipelineOutput:
    """A looping video of ``image``; the frames returned play seamlessly when repeated.

    ``method`` (default: ``options.loop_method``, else the model's: ring for image-to-video models, closed for
    interpolation models):

    - ``"ring"``: ``image`` animated on a circular timeline: the network's temporal layers wrap around, so frame
      ``num_frames - 1`` is frame 0's neighbour and the wrap is a step like any other; ``num_frames`` distinct frames.
    - ``"closed"``: ``image`` at both ends of the VDG input, the closing frame is frame 0's latent itself;
      ``num_frames - 1`` frames.
    - ``"open"``: the released way, an interpolation from ``image`` to itself whose closing frame is sampled on its
      own (it only resembles the first); the ``num_frames - 1`` frames before it.

    ``drop_last_frame=False`` appends the closing frame (for ring and closed loops, a copy of frame 0). ``kwargs``
    go to the pipeline (``generator``, sampling options ...).
    """
    if method is not None and method not in LOOP_METHODS:
        raise UserError(f"unknown loop method {method!r}: use one of {list(LOOP_METHODS)}")
    options = (options or SamplingOptions()).replace(loop=True)
    if method is not None:
        options = options.replace(loop_method=method)
    method = options.loop_method or default_loop_method(pipe.config.interp_mode)
    out = pipe(image, prompt, options, output_type=working_output_type(output_type), **kwargs)
    video, latents = out.frames, out.latents
    if method == "open" and drop_last_frame:
        video, latents = video[:, :, :-1], latents[:, :, :-1]
    elif method != "open" and not drop_last_frame:
        video, latents = (torch.cat([x, x[:, :, :1]], dim=2) for x in (video, latents))
    return PipelineOutput(frames=finish(video, output_type), latents=latents, timings=out.timings)


__all__ = ["default_loop_method", "interpolate", "interpolate_keyframes", "loop", "loop_length"]
