"""Training data: real video / image datasets, motion scores, and the generated synthetic data set.

Every dataset returns ``{"video": float32 (c, t, h, w) in [-1, 1], "caption": str, "path": str, "fps": int,
"frame_stride": int}`` (the synthetic one adds ``"motion"`` and ``"labels"``).
"""

from dynamicrafter.data.index import ClipRecord, IndexFilter, load_records, read_table, write_table
from dynamicrafter.data.motion import annotate_index, clip_motion_score, flow_magnitudes, mean_flow_magnitude
from dynamicrafter.data.synthetic import (
    MOTIONS,
    Motion,
    SyntheticConfig,
    SyntheticVideoDataset,
    write_prompt_images,
    write_video_split,
)
from dynamicrafter.data.video import (
    ImageCaptionDataset,
    ImageDataConfig,
    SkippedItem,
    VideoClipDataset,
    VideoDataConfig,
    VideoReader,
)

__all__ = [
    "MOTIONS",
    "ClipRecord",
    "ImageCaptionDataset",
    "ImageDataConfig",
    "IndexFilter",
    "Motion",
    "SkippedItem",
    "SyntheticConfig",
    "SyntheticVideoDataset",
    "VideoClipDataset",
    "VideoDataConfig",
    "VideoReader",
    "annotate_index",
    "clip_motion_score",
    "flow_magnitudes",
    "load_records",
    "mean_flow_magnitude",
    "read_table",
    "write_prompt_images",
    "write_table",
    "write_video_split",
]
