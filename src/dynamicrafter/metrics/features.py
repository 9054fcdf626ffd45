"""Per-video feature extraction with an on-disk cache that survives interruption and merges across ranks.

Every video's result is its own small file, written atomically, named by the video id::

    <cache_root>/<namespace>/<video id>.npz    features (np.ndarray) + the stamp of the clip they came from
    <cache_root>/<namespace>/<video id>.json   per-video scalar metrics + stamp

A run skips every video whose file exists with a matching stamp (content fingerprint of the video file, clip start,
stride and length, and for per-video metrics the input image), so an interrupted run resumes where it stopped and
a changed video is recomputed. Ranks of a distributed run each process ``items[rank::world_size]`` and write only
their own videos' files; merging the shards is reading the union of the files (:func:`load_features`) once all
ranks are done, on a shared filesystem or after copying the namespace folders together.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dynamicrafter.fingerprint import cache_fingerprint
from dynamicrafter.media import MediaError, atomic_path, read_video_frames

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

FeatureFn = Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class VideoItem:
    """A video to score: its id (file stem), its path, and where its clip starts and how frames are strided."""

    video_id: str
    path: Path
    start_frame: int = 0
    frame_stride: int = 1

    def stamp(self, num_frames: int | None = None) -> str:
        """Identity of the clip's content for cache validation (file fingerprint + clip geometry)."""
        return f"{cache_fingerprint(self.path)}:{self.start_frame}:{self.frame_stride}:{num_frames}"


def read_clip(item: VideoItem, num_frames: int | None = None) -> np.ndarray:
    """uint8 frames ``(t, h, w, 3)``: ``frames[start::stride]``, the first ``num_frames`` of them (all if None)."""
    frames = read_video_frames(item.path)
    clip = frames[item.start_frame::item.frame_stride]
    if num_frames is None:
        return np.ascontiguousarray(clip)
    if len(clip) < num_frames:
        needed = item.start_frame + (num_frames - 1) * item.frame_stride + 1
        raise MediaError(f"'{item.path}' has {len(frames)} frames but a {num_frames}-frame clip at stride "
                         f"{item.frame_stride} from frame {item.start_frame} needs {needed}; use a longer video or a "
                         f"smaller --real-frame-stride / --num-frames")
    return np.ascontiguousarray(clip[:num_frames])


def shard(items: Sequence[VideoItem], rank: int = 0, world_size: int = 1) -> list[VideoItem]:
    """The items rank ``rank`` of ``world_size`` processes (round robin, so shards stay balanced)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return list(items[rank::world_size])


def cache_file_name(video_id: str) -> str:
    """A filesystem-safe, collision-free file stem for a video id."""
    if SAFE_NAME.fullmatch(video_id):
        return video_id
    digest = hashlib.sha1(video_id.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', video_id).lstrip('.')}-{digest}"


class FeatureCache:
    """One ``.npz`` per video under ``root`` (a namespace folder such as ``cache/<extractor signature>/real``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, video_id: str) -> Path:
        return self.root / f"{cache_file_name(video_id)}.npz"

    def load(self, video_id: str, stamp: str | None = None) -> np.ndarray | None:
        """The cached features, or ``None`` when absent, unreadable or made from a different clip (stamp)."""
        path = self.path(video_id)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if stamp is not None and str(data["stamp"]) != stamp:
                    return None
                return np.asarray(data["features"])
        except (OSError, ValueError, KeyError):
            return None

    def save(self, video_id: str, features: np.ndarray, stamp: str) -> None:
        with atomic_path(self.path(video_id)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, features=np.asarray(features), stamp=np.asarray(stamp))


class RecordCache:
    """One ``.json`` per video under ``root``: ``{"stamp": ..., "values": {...}}``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, video_id: str) -> Path:
        return self.root / f"{cache_file_name(video_id)}.json"

    def load(self, video_id: str, stamp: str | None = None) -> dict[str, Any] | None:
        path = self.path(video_id)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if stamp is not None and record.get("stamp") != stamp:
            return None
        return record.get("values")

    def save(self, video_id: str, values: dict[str, Any], stamp: str) -> None:
        with atomic_path(self.path(video_id)) as tmp:
            tmp.write_text(json.dumps({"stamp": stamp, "values": values}, indent=1))


def feature_cache(cache_root: str | Path, signature: str, set_name: str) -> FeatureCache:
    """The cache folder ``evaluate`` uses for one extractor and one video set (``real`` or ``generated``)."""
    return FeatureCache(Path(cache_root) / signature / set_name)


def extract_features(items: Sequence[VideoItem], extractor: FeatureFn, cache: FeatureCache, num_frames: int,
                     batch_size: int = 8, rank: int = 0, world_size: int = 1, progress: bool = True,
                     desc: str = "features") -> int:
    """Extract and cache features of this rank's share of ``items``; videos already cached are skipped.

    ``extractor`` maps a list of uint8 clips ``(num_frames, h, w, 3)`` to an array ``(len(list), d)``. Results are
    written per video as each batch finishes, so an interruption loses at most one batch. Returns the number of
    videos computed in this call.
    """
    mine = shard(items, rank, world_size)
    stamps = {item.video_id: item.stamp(num_frames) for item in mine}
    todo = [item for item in mine if cache.load(item.video_id, stamps[item.video_id]) is None]
    with tqdm(total=len(mine), initial=len(mine) - len(todo), desc=desc, unit="video", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            features = np.asarray(extractor([read_clip(item, num_frames) for item in batch]))
            if features.shape[0] != len(batch):
                raise RuntimeError(f"feature extractor returned {features.shape[0]} rows for {len(batch)} clips")
            for item, row in zip(batch, features):
                cache.save(item.video_id, row, stamps[item.video_id])
            bar.update(len(batch))
    return len(todo)


def load_features(items: Sequence[VideoItem], cache: FeatureCache, num_frames: int) -> np.ndarray:
    """Stack the cached features of all ``items`` (every rank's shard) into ``(n, d)``; all must be present."""
    rows = []
    for item in items:
        row = cache.load(item.video_id, item.stamp(num_frames))
        if row is None:
            raise RuntimeError(f"no cached features for video '{item.video_id}' in {cache.root}; run the extraction "
                               f"for every rank first")
        rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, 0))
