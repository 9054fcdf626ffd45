"""Motion scores: how much a clip moves, from dense optical flow (OpenCV Farneback).

Definition of :func:`mean_flow_magnitude` for uint8 frames ``(t, h, w, 3)``, ``t >= 2``:

1. each frame is converted to grey (``cv2.COLOR_RGB2GRAY``) and resized so that its *shorter* side is ``size`` pixels
   (aspect ratio kept, the longer side rounded; area interpolation when shrinking, bilinear when enlarging);
2. for each consecutive pair ``(l, l+1)`` the Farneback flow ``(u, v)`` is computed with :data:`FARNEBACK_PARAMS`;
3. the pair's score is the mean over all pixels of ``sqrt(u^2 + v^2)``;
4. the clip's score is the mean over the ``t - 1`` pairs.

The unit is pixels of the resized frame per step between the given frames. Because every clip is brought to the same
shorter side first, the score does not depend on the source resolution: a camera pan across the whole frame at 3 % of
the shorter side per frame scores about ``0.03 * size`` at any resolution. An object moving ``v`` resized-pixels per
frame over a still background scores about ``v`` times the fraction of the frame it covers *once grown by about half
the Farneback window (``winsize`` 15) on each side*, since the flow field is smoothed across its edges: a 32x32
square in a 128x128 frame scores ``~v * 47^2 / 128^2``.

``dynamicrafter annotate`` stores per clip the score of ``--frames`` frames spread evenly over the whole clip (first
to last), so its steps are ``(num_frames - 1) / (frames - 1)`` source frames long.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dynamicrafter.data.index import (
    MOTION_SCORE_COLUMN,
    IndexFileError,
    PathResolver,
    detect_layout,
    parse_float,
    read_table,
    table_columns,
    write_table,
)
from dynamicrafter.data.video import SKIPPABLE_ERRORS, ClipTooShortError, VideoReader

logger = logging.getLogger(__name__)

DEFAULT_FLOW_SIZE = 128  # shorter side (pixels) the frames are resized to before computing the flow
DEFAULT_ANNOTATE_FRAMES = 8  # frames per clip that `annotate` samples
DEFAULT_SAVE_EVERY = 100  # `annotate` rewrites the index after this many newly scored rows
SCORE_DECIMALS = 4
MIN_FLOW_FRAMES = 2
# Farneback parameters (OpenCV's documented example values): pyramid scale, levels, window, iterations, poly_n/sigma
FARNEBACK_PARAMS: dict[str, Any] = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5,
                                    "poly_sigma": 1.2, "flags": 0}


def _grey_resized(frame: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB ``(h, w, 3)`` -> uint8 grey ``(h', w')`` with ``min(h', w') == size``."""
    import cv2  # OpenCV is imported when the flow is computed, not with the module

    grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    scale = size / min(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) == (w, h):
        return grey
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(grey, (new_w, new_h), interpolation=interpolation)


def flow_magnitudes(frames_uint8_thwc: np.ndarray, size: int = DEFAULT_FLOW_SIZE) -> np.ndarray:
    """Per-pair mean flow magnitude, float64 ``(t - 1,)``, of uint8 frames ``(t, h, w, 3)`` (module docstring)."""
    frames = np.asarray(frames_uint8_thwc)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (t, h, w, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[0] < MIN_FLOW_FRAMES:
        raise ValueError(f"optical flow needs at least {MIN_FLOW_FRAMES} frames, got {frames.shape[0]}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    import cv2

    greys = [_grey_resized(f, size) for f in frames]
    scores = np.empty(len(greys) - 1, dtype=np.float64)
    for i, (prev, nxt) in enumerate(zip(greys[:-1], greys[1:])):
        flow = cv2.calcOpticalFlowFarneback(prev, nxt, None, **FARNEBACK_PARAMS)  # (h', w', 2): (u, v) in pixels
        scores[i] = float(np.sqrt((flow.astype(np.float64) ** 2).sum(axis=-1)).mean())
    return scores


def mean_flow_magnitude(frames_uint8_thwc: np.ndarray, size: int = DEFAULT_FLOW_SIZE) -> float:
    """Mean Farneback optical-flow magnitude of uint8 frames ``(t, h, w, 3)``, in pixels per frame at shorter side
    ``size`` (exact definition in the module docstring)."""
    return float(flow_magnitudes(frames_uint8_thwc, size).mean())


def spread_indices(num_frames: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly from the first to the last of ``num_frames`` (fewer if it is short)."""
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, min(count, num_frames))})


def clip_motion_score(path: str | os.PathLike, num_frames: int = DEFAULT_ANNOTATE_FRAMES,
                      size: int = DEFAULT_FLOW_SIZE, fps: float | None = None) -> float:
    """Motion score of a video file: :func:`mean_flow_magnitude` of ``num_frames`` frames spread over the clip."""
    with VideoReader(path, fps=fps) as reader:
        indices = spread_indices(len(reader), num_frames)
        if len(indices) < MIN_FLOW_FRAMES:
            raise ClipTooShortError(f"too short: {len(reader)} frame(s), a motion score needs {MIN_FLOW_FRAMES}")
        frames = reader.get_batch(indices)
    return mean_flow_magnitude(frames, size)


@dataclass(frozen=True)
class AnnotateReport:
    """What :func:`annotate_index` did."""

    output: Path
    scored: int
    already_scored: int
    failed: int


def annotate_index(index: str | os.PathLike, output: str | os.PathLike | None = None,
                   root: str | os.PathLike | None = None, num_frames: int = DEFAULT_ANNOTATE_FRAMES,
                   size: int = DEFAULT_FLOW_SIZE, overwrite: bool = False, save_every: int = DEFAULT_SAVE_EVERY,
                   progress: bool = True) -> AnnotateReport:
    """Add a ``motion_score`` column (:func:`clip_motion_score`) to an index, keeping every other column.

    ``output`` defaults to ``index`` itself. The output is rewritten atomically every ``save_every`` newly scored
    rows and at the end, so an interrupted run loses little: when ``output`` exists and lists the same clips as
    ``index``, its scores are reused and only rows without one are computed (all rows with ``overwrite``). Clips
    that cannot be read keep an empty score, are logged and counted in :attr:`AnnotateReport.failed`.
    """
    if num_frames < MIN_FLOW_FRAMES:
        raise IndexFileError(f"--frames must be at least {MIN_FLOW_FRAMES}, got {num_frames}")
    index, output = Path(index), Path(output) if output is not None else Path(index)
    rows = read_table(index)
    if not rows:
        raise IndexFileError(f"index '{index}' holds no rows; add at least one clip")
    columns = table_columns(rows)
    resolve = PathResolver(index, detect_layout(columns, index), root)
    if output.resolve() != index.resolve() and output.exists():
        rows = _resume_rows(rows, read_table(output), resolve, index, output)
        columns = table_columns(rows)
    if MOTION_SCORE_COLUMN not in columns:
        columns.append(MOTION_SCORE_COLUMN)
    todo = [i for i, row in enumerate(rows) if overwrite or parse_float(row.get(MOTION_SCORE_COLUMN)) is None]
    scored = failed = 0
    for n, i in enumerate(tqdm(todo, desc="motion scores", unit="clip", disable=not progress), start=1):
        row = rows[i]
        row[MOTION_SCORE_COLUMN] = None
        if not resolve.has_location(row):
            failed += 1
            logger.warning("no motion score for row %d of '%s': it has no file location", i, index)
            continue
        path = resolve(row)
        try:
            score = clip_motion_score(path, num_frames, size, fps=parse_float(row.get("fps")))
        except SKIPPABLE_ERRORS as e:
            failed += 1
            logger.warning("no motion score for '%s': %s", path, e)
        else:
            row[MOTION_SCORE_COLUMN] = round(score, SCORE_DECIMALS)
            scored += 1
        if n % save_every == 0:
            write_table(rows, output, columns)
    if todo or not output.exists():
        write_table(rows, output, columns)
    logger.info("annotated %s: %d scored, %d already scored, %d failed", output, scored, len(rows) - len(todo), failed)
    return AnnotateReport(output, scored, len(rows) - len(todo), failed)


def _resume_rows(rows: Sequence[dict[str, Any]], previous: Sequence[dict[str, Any]], resolve: PathResolver,
                 index: Path, output: Path) -> list[dict[str, Any]]:
    """The rows of ``index`` with the scores an earlier run wrote to ``output`` (which must list the same clips)."""
    if [resolve.location_key(r) for r in rows] != [resolve.location_key(r) for r in previous]:
        raise IndexFileError(f"'{output}' exists but does not list the same clips as '{index}'; delete it or choose "
                             f"another output")
    merged = []
    for row, old in zip(rows, previous):
        row = dict(row)
        row[MOTION_SCORE_COLUMN] = old.get(MOTION_SCORE_COLUMN)
        merged.append(row)
    return merged
