"""Lightning plumbing of a run: atomic checkpoint files, periodic checkpoints, sample videos, the final export,
and a progress bar counted in optimizer steps."""

from __future__ import annotations

import abc
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from tqdm.auto import tqdm

from dynamicrafter.media import atomic_path, save_video

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)\.ckpt$")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside the target and renames it into place (``os.replace``):
    a crash while writing leaves the previous checkpoints intact and no partial file under the final name."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:08d}.ckpt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the run's checkpoints, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return sorted(found)


class _EveryNSteps(L.Callback, abc.ABC):
    """Runs :meth:`fire` once after every ``every``-th optimizer step (on_train_batch_end, as ModelCheckpoint)."""

    def __init__(self, every: int):
        self.every = every
        self._last = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = trainer.global_step  # a resumed run does not repeat the step it was saved at

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.every > 0 and step != self._last and step % self.every == 0:
            self._last = step
            self.fire(trainer, pl_module)

    @abc.abstractmethod
    def fire(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The periodic action."""


class PeriodicCheckpoint(_EveryNSteps):
    """Full training state every ``every`` steps and at the end, as ``checkpoints/step-XXXXXXXX.ckpt``; keeps the
    newest ``keep`` files."""

    def __init__(self, folder: Path, every: int, keep: int = 3):
        super().__init__(every)
        self.folder = folder
        self.keep = keep

    def fire(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(checkpoint_path(self.folder, trainer.global_step), weights_only=False)
        if trainer.is_global_zero and self.keep > 0:
            for _, old in list_checkpoints(self.folder)[: -self.keep]:
                if old.is_dir():  # DeepSpeed writes a checkpoint folder
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._last:
            self._last = trainer.global_step
            self.fire(trainer, pl_module)


class SampleVideos(_EveryNSteps):
    """Every ``every`` steps: animate a fixed training clip's first frame, written as
    ``samples/step-XXXXXXXX.mp4`` (generated | real clip side by side) with the caption in a ``.txt`` beside it."""

    def __init__(self, folder: Path, every: int, item: dict[str, Any], steps: int, fps: float, enabled: bool = True):
        super().__init__(every if enabled else 0)
        self.folder, self.item, self.steps, self.fps = folder, item, steps, fps

    def fire(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        generated = pl_module.sample_video(self.item, self.steps)  # (3, t, H, W)
        real = self.item["video"][0, :, : generated.shape[1]].float()
        side_by_side = torch.cat([generated, real], dim=-1)  # (3, t, H, 2W)
        name = f"step-{trainer.global_step:08d}"
        save_video(side_by_side, self.folder / f"{name}.mp4", fps=self.fps)
        with atomic_path(self.folder / f"{name}.txt") as tmp:
            tmp.write_text(f"{self.item['caption'][0]}\n", encoding="utf-8")


class ExportModel(L.Callback):
    """At the end: the trained model as ``.safetensors`` for ``DynamiCrafterPipeline.from_checkpoint``.

    Sharded weights (``strategy`` fsdp or deepspeed_stage_3) are gathered first, with every rank taking part;
    rank 0 writes the file.
    """

    def __init__(self, path: Path, strategy: str = "auto"):
        self.path = path
        self.strategy = strategy

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.strategy == "fsdp":
            state = trainer.strategy.lightning_module_state_dict()  # collective: the full state on rank 0
            if trainer.is_global_zero:
                pl_module.export_state(state, str(self.path))
        elif self.strategy == "deepspeed_stage_3":
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(pl_module.parameters()), modifier_rank=None):
                if trainer.is_global_zero:
                    pl_module.export(str(self.path))
        elif trainer.is_global_zero:
            pl_module.export(str(self.path))
        if trainer.is_global_zero:
            print(f"exported the trained model to {self.path}")


class StepProgressBar(L.Callback):
    """tqdm over optimizer steps (rank 0): loss (running mean over the last steps), steps per second, lr."""

    def __init__(self, max_steps: int, smoothing: int = 20):
        self.max_steps = max_steps
        self.smoothing = smoothing
        self._bar: tqdm | None = None
        self._losses: list[float] = []
        self._start = (0, 0.0)
        self._last_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._bar = tqdm(total=self.max_steps, initial=trainer.global_step, desc="training", unit="step",
                             dynamic_ncols=True)
        self._start = (trainer.global_step, time.perf_counter())
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        if self._bar is None:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._losses = (self._losses + [float(loss.detach())])[-self.smoothing:]
        step = trainer.global_step
        if step == self._last_step:
            return
        self._bar.update(step - self._last_step)
        self._last_step = step
        done, elapsed = step - self._start[0], time.perf_counter() - self._start[1]
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else 0.0
        self._bar.set_postfix(loss=f"{sum(self._losses) / max(len(self._losses), 1):.4f}",
                              steps_per_s=f"{done / max(elapsed, 1e-9):.3f}", lr=f"{lr:.2e}", refresh=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
