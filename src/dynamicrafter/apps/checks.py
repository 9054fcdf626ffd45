"""Measured checks of the applications, as functions of a pipeline (run them on a trained model).

Each function renders with a fixed seed and returns a report. The fields marked *mechanical* hold for any weights
(they check the wiring: what enters the VDG input, which windows run, what lambda = 0 does); the others are measured
figures whose expected direction, stated per report, holds for a trained model only.

Distances are mean squared errors between frames in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dynamicrafter.apps.interpolation import interpolate, loop
from dynamicrafter.conditioning import Conditioning
from dynamicrafter.options import TemporalWindows
from dynamicrafter.pipeline import DynamiCrafterPipeline, ImageInput

CHECK_SEED = 1234


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.float() - b.float()) ** 2).mean())


def _step_errors(video: torch.Tensor) -> torch.Tensor:
    """Video (3, t, H, W) -> MSE between consecutive frames, (t - 1,)."""
    return ((video[:, 1:] - video[:, :-1]) ** 2).mean(dim=(0, 2, 3))


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(CHECK_SEED)


def _reference(pipe: DynamiCrafterPipeline, image: ImageInput, kwargs: dict[str, Any]) -> torch.Tensor:
    d = pipe.config.defaults
    return pipe.preprocess_image(image, kwargs.get("height") or d.height, kwargs.get("width") or d.width)


@dataclass
class InterpolationReport:
    """Expected for a trained model: ``start_error`` and ``end_error`` below ``cross_error`` (the video goes from
    the start to the end). Mechanical: ``vdg_ends`` (both ends in the VDG input, zeros between)."""

    start_error: float  # first frame vs start image
    end_error: float  # last frame vs end image
    cross_error: float  # mean of first frame vs end image and last frame vs start image
    vdg_ends: bool


def _capture_conditioning(store: list[Conditioning]) -> Callable[[Callable, Conditioning], Callable]:
    def wrapper(denoise: Callable, cond: Conditioning) -> Callable:
        store.append(cond)
        return denoise

    return wrapper


def interpolation_report(pipe: DynamiCrafterPipeline, start: ImageInput, end: ImageInput, prompt: str = "",
                         **kwargs: Any) -> InterpolationReport:
    conds: list[Conditioning] = []
    video = interpolate(pipe, start, end, prompt, generator=_generator(), output_type="pt",
                        denoiser_wrapper=_capture_conditioning(conds), **kwargs).frames[0]
    s, e = _reference(pipe, start, kwargs), _reference(pipe, end, kwargs)
    vdg = conds[0].concat
    vdg_ends = vdg is not None and bool(vdg[:, :, 1:-1].eq(0).all() and vdg[:, :, 0].ne(0).any()
                                        and vdg[:, :, -1].ne(0).any())
    return InterpolationReport(_mse(video[:, 0], s), _mse(video[:, -1], e),
                               (_mse(video[:, 0], e) + _mse(video[:, -1], s)) / 2, vdg_ends)


@dataclass
class LoopReport:
    """Expected for a trained model: ``seam_step`` (last saved frame -> first frame, where the loop wraps) no larger
    than ``mean_step`` (a typical step between consecutive frames). Mechanical: ``frames`` as saved (``num_frames``
    for a ring loop, ``num_frames - 1`` for closed and open loops)."""

    frames: int
    seam_step: float
    mean_step: float
    image_error: float  # first frame vs the input image

    @property
    def seam_ratio(self) -> float:
        return self.seam_step / max(self.mean_step, 1e-12)


def loop_report(pipe: DynamiCrafterPipeline, image: ImageInput, prompt: str = "", **kwargs: Any) -> LoopReport:
    """``kwargs`` go to :func:`loop` (``method``, ``num_frames``, ...) and the pipeline."""
    video = loop(pipe, image, prompt, generator=_generator(), output_type="pt", **kwargs).frames[0]  # as saved
    return LoopReport(video.shape[1], _mse(video[:, -1], video[:, 0]), float(_step_errors(video).mean()),
                      _mse(video[:, 0], _reference(pipe, image, kwargs)))


@dataclass
class LambdaSweep:
    """Per scale s of lambda: ``image_error`` (mean MSE of the frames to the input image) and ``motion`` (mean MSE
    between consecutive frames). Expected for a trained model: as s decreases, image_error grows (less adherence to
    the image); motion changes too, in a direction the model decides (the default model moves less at s = 0, see
    the README). Mechanical: ``zero_is_context_off`` (s = 0 equals the run without the context stream, bit for
    bit)."""

    scales: list[float]
    image_error: list[float]
    motion: list[float]
    zero_is_context_off: bool


def lambda_sweep(pipe: DynamiCrafterPipeline, image: ImageInput, prompt: str = "",
                 scales: Sequence[float] = (0.0, 0.5, 1.0), **kwargs: Any) -> LambdaSweep:
    reference = _reference(pipe, image, kwargs)[:, None]  # (3, 1, H, W)
    errors, motion, zero = [], [], None
    for s in scales:
        video = pipe(image, prompt, generator=_generator(), output_type="pt", image_attention_scale=float(s),
                     **kwargs).frames[0]
        errors.append(_mse(video, reference.expand_as(video)))
        motion.append(float(_step_errors(video).mean()) if video.shape[1] > 1 else 0.0)
        if s == 0:
            zero = video
    off = pipe(image, prompt, generator=_generator(), output_type="pt", context_stream=False, **kwargs).frames[0]
    return LambdaSweep([float(s) for s in scales], errors, motion, zero is not None and torch.equal(zero, off))


@dataclass
class WindowReport:
    """Expected for a trained model: ``boundary_step`` (frame steps where a window starts or ends) of the order of
    ``interior_step`` (no visible seams). Mechanical: ``frames``, ``covered`` (every frame is in a window) and
    ``full_window_is_plain`` (one window spanning the video equals the plain run, bit for bit)."""

    frames: int
    windows: list[tuple[int, int]]
    covered: bool
    boundary_step: float
    interior_step: float
    full_window_is_plain: bool


def window_report(pipe: DynamiCrafterPipeline, image: ImageInput, prompt: str = "", num_frames: int = 32,
                  windows: TemporalWindows | None = None, **kwargs: Any) -> WindowReport:
    windows = windows or TemporalWindows()
    length = pipe.config.unet.temporal_length
    slices = windows.slices(num_frames, length)
    video = pipe(image, prompt, generator=_generator(), output_type="pt", num_frames=num_frames,
                 temporal_windows=windows, **kwargs).frames[0]
    steps = _step_errors(video)
    edges = {s.start - 1 for s in slices if s.start > 0} | {s.stop - 1 for s in slices if s.stop < num_frames}
    boundary = [float(steps[i]) for i in sorted(edges)]
    interior = [float(steps[i]) for i in range(len(steps)) if i not in edges]
    covered = set().union(*(range(s.start, s.stop) for s in slices)) == set(range(num_frames))
    short = dict(kwargs, num_frames=length)
    plain = pipe(image, prompt, generator=_generator(), output_type="pt", **short).frames[0]
    full = pipe(image, prompt, generator=_generator(), output_type="pt",
                temporal_windows=TemporalWindows(length, weighting=windows.weighting), **short).frames[0]
    return WindowReport(video.shape[1], [(s.start, s.stop) for s in slices], covered,
                        sum(boundary) / max(len(boundary), 1), sum(interior) / max(len(interior), 1),
                        torch.equal(plain, full))


__all__ = ["InterpolationReport", "LambdaSweep", "LoopReport", "WindowReport", "interpolation_report",
           "lambda_sweep", "loop_report", "window_report"]
