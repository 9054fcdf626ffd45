"""Video clip and image datasets for training on real data.

Every dataset returns the sample dict the training code consumes::

    {"video": float32 tensor (c, t, h, w) in [-1, 1],   # c = 3 (RGB); t = video_length (1 for images)
     "caption": str, "path": str,
     "fps": int,             # frame rate of the returned clip = source fps // frame_stride (as released)
     "frame_stride": int}    # distance, in source frames, between returned frames

Clip sampling follows the released ``lvdm/data/webvid.py``: ``video_length`` frames ``frame_stride`` apart (a stride
drawn uniformly from ``[frame_stride_min, frame_stride]`` with ``random_fs``), the stride reduced to
``num_frames // video_length`` when the video is too short for it, a uniformly random start frame. The randomness
comes from a generator seeded with ``(seed, epoch, index, attempt)``, so a given seed, epoch and index always gives
the same clip, in any worker, which exact training resume relies on: call :meth:`set_epoch` before each epoch.

Unreadable, corrupt or too-short files are skipped: the item is replaced by the next index (deterministically),
the skip is logged (``logging``, logger ``dynamicrafter.data.video``) and recorded. :attr:`skipped` lists the skips
seen by *this process* (with path and reason); :attr:`skipped_count` is a counter in shared memory that also counts
skips made by DataLoader worker processes (fork or spawn start methods); the workers' warnings carry the paths. Each
process remembers the indices that failed and does not open them again.

Spatial transform: ``resize_center_crop`` resizes the shorter side to ``min(resolution)`` and center-crops, exactly as
released (torchvision ``Resize`` + ``CenterCrop``, antialiased bilinear) whenever the source is at least as wide as the
target aspect ratio; for narrower sources, where the released code pads with black, frames are scaled to cover the
target instead (:func:`resized_size`). ``random_crop`` takes the same resize and a seeded random crop offset.
"""

from __future__ import annotations

import abc
import logging
import multiprocessing
import multiprocessing.context
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dynamicrafter.data.index import ClipRecord, IndexFilter, load_records
from dynamicrafter.errors import UserError

logger = logging.getLogger(__name__)

SPATIAL_TRANSFORMS = ("resize_center_crop", "random_crop")
PIXEL_SCALE = 127.5  # uint8 -> [-1, 1]: x / 127.5 - 1 == (x / 255 - 0.5) * 2 as released
FIXED_FPS_MIN_FRACTION = 0.5  # with fixed_fps, clips shorter than half the required frames are dropped (released)
SEEK_GAP_FRAMES = 48  # wanted frames further apart than this are reached by a new seek, not by decoding through
DEFAULT_IMAGE_FPS = 8  # fps reported for still images (stage (i) training does not use the fs embedding)
SHARED_COUNTER_TYPE = "q"  # signed 64-bit integer in shared memory


class VideoDecodeError(Exception):
    """A video that cannot be opened or decoded (caught by the datasets, which skip the clip)."""


class ClipTooShortError(Exception):
    """A video with fewer frames than a clip needs (caught by the datasets, which skip the clip)."""


# errors that mark a file as unusable, so the datasets skip it (PIL's UnidentifiedImageError is an OSError; PyAV's
# errors are wrapped in VideoDecodeError by VideoReader)
SKIPPABLE_ERRORS = (VideoDecodeError, ClipTooShortError, OSError, Image.DecompressionBombError)


# ----------------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------------


class VideoReader:
    """Random access to the frames of a video file with PyAV; use as a context manager.

    Frame ``i`` is the frame shown at time ``i / fps`` (indices come from presentation timestamps, so a seek lands on
    the same frames a full decode would give); ``fps`` is only used for a stream that declares no frame rate.
    :meth:`get_batch` seeks to the key frame before each run of nearby wanted frames and decodes forward only as far
    as the run's last frame, converting only the wanted frames to RGB.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = None) -> None:
        import av  # local import: PyAV loads the FFmpeg libraries

        self.path = str(path)
        try:
            self._container = av.open(self.path)
            self._stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError, OSError, ValueError) as e:  # type: ignore[attr-defined]
            raise VideoDecodeError(f"cannot open ({e.__class__.__name__}: {e})") from e
        stream = self._stream
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or fps
        if not rate or float(rate) <= 0:
            self.close()
            raise VideoDecodeError("unknown frame rate (add an 'fps' column to the index)")
        self.fps = float(rate)
        self._rate = Fraction(rate).limit_denominator(1_000_000)
        self._time_base = stream.time_base or Fraction(1, 1_000_000)
        self._start = stream.start_time or 0
        self.num_frames = int(stream.frames or 0) or self._estimate_frames()
        if self.num_frames <= 0:
            self.close()
            raise VideoDecodeError("holds no video frames")
        self.height, self.width = stream.height, stream.width

    def _estimate_frames(self) -> int:
        if self._stream.duration:
            return int(self._stream.duration * self._time_base * self._rate)
        if self._container.duration:
            return int(Fraction(self._container.duration, 1_000_000) * self._rate)
        return sum(1 for _ in self._frames())  # no metadata: count by decoding (rare, e.g. raw streams)

    def __len__(self) -> int:
        return self.num_frames

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def _frames(self):
        import av

        try:
            yield from self._container.decode(self._stream)
        except (av.error.FFmpegError, OSError, ValueError) as e:  # type: ignore[attr-defined]
            raise VideoDecodeError(f"decoding failed ({e.__class__.__name__}: {e})") from e

    def _frame_index(self, pts: int) -> int:
        return round((pts - self._start) * self._time_base * self._rate)

    def get_batch(self, indices: list[int] | np.ndarray) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 ``(len(indices), h, w, 3)`` RGB."""
        wanted = sorted({int(i) for i in indices})
        if not wanted:
            raise ValueError("get_batch needs at least one frame index")
        if wanted[0] < 0:
            raise ValueError(f"negative frame index {wanted[0]}")
        got: dict[int, np.ndarray] = {}
        run = [wanted[0]]
        for index in wanted[1:] + [None]:  # runs of nearby frames share one seek
            if index is not None and index - run[-1] <= SEEK_GAP_FRAMES:
                run.append(index)
                continue
            got.update(self._decode_run(run))
            run = [index] if index is not None else []
        return np.stack([got[int(i)] for i in indices])

    def _decode_run(self, wanted: list[int]) -> dict[int, np.ndarray]:
        import av

        target = self._start + int(Fraction(wanted[0]) / self._rate / self._time_base)
        try:
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
            got = self._collect(wanted)
            if got is None:  # the seek overshot (broken index); decode from the start instead
                self._container.seek(self._start, stream=self._stream, backward=True, any_frame=False)
                got = self._collect(wanted, allow_overshoot=True)
        except (av.error.FFmpegError, OSError) as e:  # type: ignore[attr-defined]
            raise VideoDecodeError(f"seek failed ({e.__class__.__name__}: {e})") from e
        assert got is not None
        return got

    def _collect(self, wanted: list[int], allow_overshoot: bool = False) -> dict[int, np.ndarray] | None:
        """Decode forward, giving each wanted index the first frame at or after it; ``None`` if the seek overshot."""
        got: dict[int, np.ndarray] = {}
        position, count = 0, 0
        for frame in self._frames():
            index = self._frame_index(frame.pts) if frame.pts is not None else count
            count += 1
            if not got and index > wanted[0] and not allow_overshoot:
                return None
            if index < wanted[position]:
                continue
            array = frame.to_ndarray(format="rgb24")
            while position < len(wanted) and index >= wanted[position]:
                got[wanted[position]] = array
                position += 1
            if position == len(wanted):
                return got
        raise VideoDecodeError(f"ran out of frames: wanted frame {wanted[position]}, the video ends earlier")


# ----------------------------------------------------------------------------------------------------------------
# Clip sampling and spatial transforms
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipPlan:
    """Which source frames make a clip, and the stride / fps that go to the model's fs embedding."""

    indices: list[int]
    frame_stride: int
    fps: int


def plan_clip(num_frames: int, source_fps: float, video_length: int, frame_stride: int, rng: np.random.Generator,
              fixed_fps: float | None = None, fps_max: int | None = None) -> ClipPlan:
    """Choose ``video_length`` frame indices of a ``num_frames``-frame video as the released WebVid loader does.

    ``frame_stride`` is the (possibly random) stride asked for; with ``fixed_fps`` it is rescaled by
    ``source_fps / fixed_fps``. A video too short for the stride gets the stride ``num_frames // video_length``;
    one with fewer than ``video_length`` frames raises :class:`ClipTooShortError`.
    """
    if num_frames < video_length:
        raise ClipTooShortError(f"too short: {num_frames} frames, a clip needs {video_length}")
    if fixed_fps is not None:
        frame_stride = int(frame_stride * (source_fps / fixed_fps))
    frame_stride = max(frame_stride, 1)
    required = frame_stride * (video_length - 1) + 1
    if num_frames < required:
        if fixed_fps is not None and num_frames < required * FIXED_FPS_MIN_FRACTION:
            raise ClipTooShortError(f"too short for fixed fps {fixed_fps}: {num_frames} frames, needs {required}")
        frame_stride = num_frames // video_length
        required = frame_stride * (video_length - 1) + 1
    start = int(rng.integers(0, num_frames - required + 1))
    fps = int(source_fps // frame_stride)
    if fps_max is not None:
        fps = min(fps, fps_max)
    return ClipPlan([start + frame_stride * i for i in range(video_length)], frame_stride, fps)


def resized_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """Size ``(h, w)`` a frame is resized to before cropping ``target = (h, w)`` out of it.

    As released (torchvision ``Resize(min(target))``) the shorter side becomes ``min(target)``; where that would not
    cover the target (a source narrower than the target's aspect ratio, which the released code pads with black), the
    frame is instead scaled just enough to cover it.
    """
    th, tw = target
    short = min(th, tw)
    if width <= height:
        new_h, new_w = int(short * height / width), short
    else:
        new_h, new_w = short, int(short * width / height)
    if new_h < th or new_w < tw:
        scale = max(th / height, tw / width)
        new_h, new_w = max(th, round(height * scale)), max(tw, round(width * scale))
    return new_h, new_w


def transform_frames(frames: np.ndarray | list[Image.Image], target: tuple[int, int], mode: str = "resize_center_crop",
                     rng: np.random.Generator | None = None) -> torch.Tensor:
    """uint8 frames ``(t, h, w, 3)`` (or PIL images) -> float32 video ``(c, t, th, tw)`` in [-1, 1].

    ``mode="resize_center_crop"``: resize (bilinear, antialiased, see :func:`resized_size`) then center crop.
    ``mode="random_crop"``: the same resize, then a crop at an offset drawn from ``rng`` (the same for all frames).
    """
    if mode not in SPATIAL_TRANSFORMS:
        raise UserError(f"spatial_transform must be one of {', '.join(SPATIAL_TRANSFORMS)}, got {mode!r}")
    images = [f if isinstance(f, Image.Image) else Image.fromarray(f) for f in frames]
    width, height = images[0].size
    new_h, new_w = resized_size(height, width, target)
    th, tw = target
    if mode == "random_crop":
        rng = rng if rng is not None else np.random.default_rng()
        top, left = int(rng.integers(0, new_h - th + 1)), int(rng.integers(0, new_w - tw + 1))
    else:
        top, left = int(round((new_h - th) / 2.0)), int(round((new_w - tw) / 2.0))
    out = np.empty((len(images), th, tw, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), Image.BILINEAR)
        out[i] = np.asarray(image.convert("RGB").crop((left, top, left + tw, top + th)))
    return frames_to_video(out)


def frames_to_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames ``(t, h, w, 3)`` -> float32 video ``(3, t, h, w)`` in [-1, 1] (converted in numpy: fast)."""
    video = np.ascontiguousarray(frames.transpose(3, 0, 1, 2)).astype(np.float32)
    return torch.from_numpy(video / np.float32(PIXEL_SCALE) - np.float32(1.0))


# ----------------------------------------------------------------------------------------------------------------
# Skipping bad files
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkippedItem:
    """A file a dataset could not use: its index, path and the reason."""

    index: int
    path: str
    reason: str


def _shared_int(value: int) -> Any:
    """An integer in shared memory with a lock. Made with the spawn context, so that both forked and spawned
    worker processes can inherit it (a fork-context lock refuses to be sent to a spawned process)."""
    return multiprocessing.get_context("spawn").Value(SHARED_COUNTER_TYPE, value)


class _SkippingDataset(Dataset, abc.ABC):
    """Shared machinery: epoch-seeded per-item generators and skipping unreadable items.

    The epoch and the skip counter live in shared memory so that DataLoader workers (including persistent ones) see
    :meth:`set_epoch` and report their skips. A plain ``pickle`` of the dataset (outside of starting a worker process)
    gets private copies of both.
    """

    records: list[ClipRecord]

    def __init__(self, seed: int, max_skips: int) -> None:
        self.seed = seed
        self.max_skips = max_skips
        self.skipped: list[SkippedItem] = []
        self._bad: set[int] = set()
        self._epoch = _shared_int(0)
        self._skip_count = _shared_int(0)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if multiprocessing.context.get_spawning_popen() is None:  # not starting a worker: no shared memory to pass
            state["_epoch"] = self._epoch.value
            state["_skip_count"] = self._skip_count.value
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key in ("_epoch", "_skip_count"):
            if isinstance(state[key], int):
                state[key] = _shared_int(state[key])
        self.__dict__.update(state)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose clips (start frames, strides, crops) ``__getitem__`` returns."""
        self._epoch.value = int(epoch)

    @property
    def skipped_count(self) -> int:
        """Skips made by this dataset in this process and in its DataLoader workers."""
        return int(self._skip_count.value)

    def __len__(self) -> int:
        return len(self.records)

    def generator(self, index: int, attempt: int = 0) -> np.random.Generator:
        """The random generator for item ``index`` of the current epoch (``attempt`` > 0 after skips)."""
        return np.random.default_rng([self.seed, self.epoch, index, attempt])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        for attempt in range(min(self.max_skips, len(self)) + 1):
            candidate = (index + attempt) % len(self)
            if candidate in self._bad:
                continue
            try:
                return self._load(candidate, self.generator(index, attempt))
            except SKIPPABLE_ERRORS as e:
                self._record_skip(candidate, str(e))
        raise UserError(f"no readable item among {min(self.max_skips, len(self)) + 1} tries starting at index {index} "
                        f"(last: '{self.skipped[-1].path if self.skipped else '?'}'); check the files of the index")

    def _record_skip(self, index: int, reason: str) -> None:
        path = self.records[index].path
        self._bad.add(index)
        self.skipped.append(SkippedItem(index, path, reason))
        with self._skip_count.get_lock():
            self._skip_count.value += 1
        logger.warning("skipping '%s': %s", path, reason)

    @abc.abstractmethod
    def _load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """The sample of record ``index``; raises one of :data:`SKIPPABLE_ERRORS` when the file is unusable."""


# ----------------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class VideoDataConfig:
    """A video clip dataset. Defaults follow the released 512 training config (``configs/training_512_v1.0``).

    ``resolution`` is ``(h, w)``. ``index`` is a WebVid CSV or a generic CSV/JSONL (see
    :mod:`dynamicrafter.data.index`), ``root`` the folder its paths are relative to (default: the index's folder).
    """

    index: str
    root: str | None = None
    layout: str = "auto"
    video_length: int = 16
    resolution: tuple[int, int] = (320, 512)
    frame_stride: int = 6
    frame_stride_min: int = 1
    random_fs: bool = True
    fixed_fps: float | None = None
    fps_max: int | None = None
    spatial_transform: str = "resize_center_crop"
    caption_mode: str = "caption"
    min_dynamic_confidence: float | None = None
    min_motion_score: float | None = None
    seed: int = 0
    max_skips: int = 1000

    def __post_init__(self) -> None:
        self.resolution = (int(self.resolution[0]), int(self.resolution[1]))
        if self.video_length < 1 or self.frame_stride < 1 or not 1 <= self.frame_stride_min <= self.frame_stride:
            raise UserError(f"need video_length >= 1 and 1 <= frame_stride_min <= frame_stride, got "
                            f"{self.video_length}, {self.frame_stride_min}, {self.frame_stride}")
        if self.spatial_transform not in SPATIAL_TRANSFORMS:
            raise UserError(f"spatial_transform must be one of {', '.join(SPATIAL_TRANSFORMS)}, "
                            f"got {self.spatial_transform!r}")


class VideoClipDataset(_SkippingDataset):
    """Clips of real videos listed in an index; see the module docstring for the sample dict and the sampling."""

    def __init__(self, config: VideoDataConfig) -> None:
        super().__init__(config.seed, config.max_skips)
        self.config = config
        filters = IndexFilter(config.caption_mode, config.min_dynamic_confidence, config.min_motion_score)
        self.records = load_records(config.index, config.root, config.layout, filters)

    def _load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        cfg, record = self.config, self.records[index]
        stride = int(rng.integers(cfg.frame_stride_min, cfg.frame_stride + 1)) if cfg.random_fs else cfg.frame_stride
        if not Path(record.path).is_file():
            raise VideoDecodeError("file not found")
        with VideoReader(record.path, fps=record.fps) as reader:
            source_fps = record.fps or reader.fps  # an index's fps column overrides the container's
            plan = plan_clip(len(reader), source_fps, cfg.video_length, stride, rng, cfg.fixed_fps, cfg.fps_max)
            frames = reader.get_batch(plan.indices)
        video = transform_frames(frames, cfg.resolution, cfg.spatial_transform, rng)
        return {"video": video, "caption": record.caption, "path": record.path, "fps": plan.fps,
                "frame_stride": plan.frame_stride}


@dataclass
class ImageDataConfig:
    """An image + caption dataset for stage (i) training: a CSV/JSONL index with ``path`` and ``caption``.

    Items come out as one-frame videos with ``fps`` and ``frame_stride`` set to the values below, so the same training
    code runs on them.
    """

    index: str
    root: str | None = None
    resolution: tuple[int, int] = (320, 512)
    spatial_transform: str = "resize_center_crop"
    fps: int = DEFAULT_IMAGE_FPS
    frame_stride: int = 1
    seed: int = 0
    max_skips: int = 1000

    def __post_init__(self) -> None:
        self.resolution = (int(self.resolution[0]), int(self.resolution[1]))
        if self.spatial_transform not in SPATIAL_TRANSFORMS:
            raise UserError(f"spatial_transform must be one of {', '.join(SPATIAL_TRANSFORMS)}, "
                            f"got {self.spatial_transform!r}")


class ImageCaptionDataset(_SkippingDataset):
    """Captioned still images as ``(c, 1, h, w)`` videos in [-1, 1]; unreadable images are skipped like videos."""

    def __init__(self, config: ImageDataConfig) -> None:
        super().__init__(config.seed, config.max_skips)
        self.config = config
        self.records = load_records(config.index, config.root, layout="generic")

    def _load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        cfg, record = self.config, self.records[index]
        with Image.open(record.path) as im:
            im.load()
            image = im.convert("RGB")
        video = transform_frames([image], cfg.resolution, cfg.spatial_transform, rng)
        return {"video": video, "caption": record.caption, "path": record.path, "fps": cfg.fps,
                "frame_stride": cfg.frame_stride}
