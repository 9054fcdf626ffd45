"""Training data: real video / image datasets, motion scores, and the generated synthetic data set.

Every dataset returns ``{"video": float32 (c, t, h, w) in [-1, 1], "caption": str, "path": str, "fps": int,
"frame_stride": int}`` (the synthetic one adds ``"motion"`` and ``"labels"``). Names are imported lazily.
"""

from __future__ import annotations

from dynamicrafter.lazy import lazy_getattr

_LAZY = {
    "ClipRecord": "dynamicrafter.data.index",
    "IndexFilter": "dynamicrafter.data.index",
    "load_records": "dynamicrafter.data.index",
    "read_table": "dynamicrafter.data.index",
    "write_table": "dynamicrafter.data.index",
    "annotate_index": "dynamicrafter.data.motion",
    "clip_motion_score": "dynamicrafter.data.motion",
    "flow_magnitudes": "dynamicrafter.data.motion",
    "mean_flow_magnitude": "dynamicrafter.data.motion",
    "MOTIONS": "dynamicrafter.data.synthetic",
    "Motion": "dynamicrafter.data.synthetic",
    "SyntheticConfig": "dynamicrafter.data.synthetic",
    "SyntheticVideoDataset": "dynamicrafter.data.synthetic",
    "write_prompt_images": "dynamicrafter.data.synthetic",
    "write_video_split": "dynamicrafter.data.synthetic",
    "ImageCaptionDataset": "dynamicrafter.data.video",
    "ImageDataConfig": "dynamicrafter.data.video",
    "SkippedItem": "dynamicrafter.data.video",
    "VideoClipDataset": "dynamicrafter.data.video",
    "VideoDataConfig": "dynamicrafter.data.video",
    "VideoReader": "dynamicrafter.data.video",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
