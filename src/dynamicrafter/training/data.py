"""Training data: from ``--data`` to an endless, resumable stream of batches.

``--data`` may be

* ``latents:FOLDER``: generated clips with their cached VAE posteriors (:mod:`dynamicrafter.data.latents`);
* ``synthetic:N``: N generated clips (:class:`dynamicrafter.data.synthetic.SyntheticVideoDataset`, rendered in memory);
* a WebVid CSV (``videoid, page_dir, name``; videos under ``--data-root``) or a generic CSV/JSONL index
  (``path, caption[, fps]``): :class:`dynamicrafter.data.video.VideoClipDataset`;
* a generic index whose paths are images (stage i): :class:`dynamicrafter.data.video.ImageCaptionDataset`;
* a folder holding one of those indexes (``train.csv``, ``index.csv``, ``index.jsonl`` or a single ``*.csv`` /
  ``*.jsonl``), e.g. the output of ``dynamicrafter synth``.

Order and resume. The run reads one endless stream: data epoch ``e`` is the permutation
``default_rng([seed, e]).permutation(N)`` of the N items, epochs follow each other, and global stream position ``g``
goes to rank ``g % world_size``. The position is the number of samples consumed so far (saved in every checkpoint),
so a resumed run continues with exactly the samples the uninterrupted run would have used. Clip sampling (start
frame, stride, crop) is a function of (seed, epoch, index) in the data layer, the same in any worker.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from dynamicrafter.errors import UserError
from dynamicrafter.media import IMAGE_EXTENSIONS
from dynamicrafter.utils import worker_context

SYNTHETIC_PREFIX = "synthetic:"
LATENTS_PREFIX = "latents:"
INDEX_NAMES = ("train.csv", "index.csv", "index.jsonl", "train.jsonl")


@dataclass(frozen=True)
class DataSettings:
    """What the stage needs from the data: clip length and size, stride sampling, seed."""

    num_frames: int
    resolution: tuple[int, int]  # (h, w)
    frame_stride: int = 6
    frame_stride_min: int = 1
    random_fs: bool = True
    seed: int = 0
    root: str | None = None


def find_index(folder: Path) -> Path:
    """The index file inside a data folder."""
    for name in INDEX_NAMES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".csv", ".jsonl"))
    if len(candidates) == 1:
        return candidates[0]
    raise UserError(f"--data folder '{folder}' has {'no' if not candidates else 'several'} index files (.csv/.jsonl); "
                    f"pass the index file itself (e.g. --data {folder}/train.csv)")


def _index_holds_images(index: Path) -> bool:
    from dynamicrafter.data.index import read_table

    rows = read_table(index)
    if not rows or "path" not in rows[0]:
        return False
    return Path(str(rows[0]["path"])).suffix.lower() in IMAGE_EXTENSIONS


def build_dataset(spec: str, settings: DataSettings) -> Dataset:
    """The data layer's dataset for ``--data`` (see the module docstring)."""
    if spec.startswith(LATENTS_PREFIX):
        from dynamicrafter.data.latents import LatentClipDataset

        return LatentClipDataset(spec[len(LATENTS_PREFIX):])
    if spec.startswith(SYNTHETIC_PREFIX):
        from dynamicrafter.data.synthetic import SyntheticConfig, SyntheticVideoDataset

        count = spec[len(SYNTHETIC_PREFIX):]
        if not count.isdigit() or int(count) < 1:
            raise UserError(f"--data '{spec}': write synthetic:N with N >= 1 clips (e.g. synthetic:500)")
        h, w = settings.resolution
        config = SyntheticConfig(num_clips=int(count), frames=max(2, settings.num_frames), height=h, width=w,
                                 seed=settings.seed, held_out_fraction=0.0)
        return SyntheticVideoDataset(config, "train")
    path = Path(spec)
    if not path.exists():
        raise UserError(f"--data '{spec}' not found: pass an index (.csv/.jsonl), a folder with one, or synthetic:N")
    index = find_index(path) if path.is_dir() else path
    if _index_holds_images(index):
        from dynamicrafter.data.video import ImageCaptionDataset, ImageDataConfig

        if settings.num_frames != 1:
            raise UserError(f"--data '{index}' lists images, which only stage i (one frame) trains on; pass a video "
                            f"index for {settings.num_frames}-frame clips")
        return ImageCaptionDataset(ImageDataConfig(index=str(index), root=settings.root,
                                                   resolution=settings.resolution, seed=settings.seed))
    from dynamicrafter.data.video import VideoClipDataset, VideoDataConfig

    return VideoClipDataset(VideoDataConfig(
        index=str(index), root=settings.root, video_length=settings.num_frames, resolution=settings.resolution,
        frame_stride=settings.frame_stride, frame_stride_min=min(settings.frame_stride_min, settings.frame_stride),
        random_fs=settings.random_fs, seed=settings.seed))


class PositionedDataset(Dataset):
    """Items addressed by ``(data epoch, index)``; each item reports how many unreadable files it skipped."""

    def __init__(self, base: Dataset, num_frames: int):
        self.base = base
        self.num_frames = num_frames

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def privatize(self) -> None:
        """In a DataLoader worker: a shallow copy of the dataset with its own epoch value (the data layer's epoch
        lives in shared memory, and workers may be at different epochs around an epoch boundary)."""
        if hasattr(self.base, "set_epoch"):
            self.base = copy.copy(self.base)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        base = self.base
        if hasattr(base, "set_epoch") and base.epoch != epoch:
            base.set_epoch(epoch)
        before = getattr(base, "skipped_count", 0)
        item = base[index]
        skipped = getattr(base, "skipped_count", 0) - before
        video = item["video"][:, : self.num_frames]  # (c, t, h, w) in [-1, 1]
        out = {"video": video, "caption": str(item["caption"]), "fps": int(item["fps"]),
               "frame_stride": int(item["frame_stride"]), "path": str(item["path"]), "skipped": skipped}
        if "latent_mean" in item:  # cached VAE posterior (dynamicrafter.data.latents)
            out["latent_mean"] = item["latent_mean"][:, : self.num_frames]
            out["latent_logvar"] = item["latent_logvar"][:, : self.num_frames]
        return out


def _worker_init(_: int) -> None:
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, PositionedDataset):
        info.dataset.privatize()


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    batch = {
        "video": torch.stack([it["video"] for it in items]),  # (b, c, t, h, w)
        "caption": [it["caption"] for it in items],
        "fps": torch.tensor([it["fps"] for it in items], dtype=torch.long),
        "frame_stride": torch.tensor([it["frame_stride"] for it in items], dtype=torch.long),
        "path": [it["path"] for it in items],
        "skipped": torch.tensor([it["skipped"] for it in items], dtype=torch.long),
    }
    if "latent_mean" in items[0]:
        batch["latent_mean"] = torch.stack([it["latent_mean"] for it in items])  # (b, c, t, h, w)
        batch["latent_logvar"] = torch.stack([it["latent_logvar"] for it in items])
    return batch


class StreamSampler(Sampler):
    """Endless ``(epoch, index)`` keys of this rank, from global stream position ``start`` on (module docstring)."""

    def __init__(self, num_items: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1):
        if num_items < 1:
            raise UserError("the training data set is empty")
        self.num_items, self.seed, self.start, self.rank, self.world_size = num_items, seed, start, rank, world_size

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_items)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start + self.rank
        epoch, order = -1, np.empty(0, dtype=np.int64)
        while True:
            e, i = divmod(position, self.num_items)
            if e != epoch:
                epoch, order = e, self.permutation(e)
            yield epoch, int(order[i])
            position += self.world_size


class TrainingData(L.LightningDataModule):
    """The DataModule of a run: the stream loader starts at the position restored from the checkpoint."""

    def __init__(self, dataset: Dataset, num_frames: int, batch_size: int, num_workers: int, seed: int):
        super().__init__()
        self.dataset = PositionedDataset(dataset, num_frames)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        start = int(getattr(trainer.lightning_module, "consumed_samples", 0)) if trainer is not None else 0
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = StreamSampler(len(self.dataset), self.seed, start, rank, world)
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=collate, worker_init_fn=_worker_init, pin_memory=torch.cuda.is_available(),
                          persistent_workers=False,
                          multiprocessing_context=worker_context() if self.num_workers > 0 else None)

    def sample_item(self) -> dict[str, Any]:
        """A fixed clip (first item of data epoch 0) for the sample videos."""
        return collate([self.dataset[(0, int(StreamSampler(len(self.dataset), self.seed).permutation(0)[0]))]])
