"""Random-weight models, checkpoints, pipelines and images for the tests and the benchmarks (no weights can be
downloaded here). Where the test *data* lives (the released key lists, real clips) is tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from dynamicrafter.config import ModelConfig, config_for_tests
from dynamicrafter.model import DynamiCrafter

if TYPE_CHECKING:
    from dynamicrafter.pipeline import DynamiCrafterPipeline


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Give every parameter random values (zero-initialized output layers would make outputs trivial).

    Norm weights stay near 1 and biases near 0 so that activations keep a sensible scale.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen) * std
        if p.ndim == 1 and ("norm" in name or "ln_" in name or "layer_norm" in name) and name.endswith("weight"):
            p.copy_(1.0 + noise)
        elif p.ndim >= 2 and not name.endswith(("latents", "embedding", "embeddings_table")):
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
        else:
            p.copy_(noise)
    return model


def random_model(config: ModelConfig, seed: int = 0) -> DynamiCrafter:
    torch.manual_seed(seed)
    return randomize_(DynamiCrafter(config), seed).eval()


def write_random_checkpoint(config: ModelConfig, path: str | os.PathLike, seed: int = 0,
                            include_unused: bool = True) -> Path:
    """A checkpoint with exactly the released tensor names (reduced widths for small configs)."""
    from dynamicrafter.checkpoint import save_checkpoint

    return save_checkpoint(random_model(config, seed), path, include_unused=include_unused)


def tiny_checkpoint(folder: Path, config: ModelConfig | None = None, name: str = "tiny.ckpt", seed: int = 0) -> Path:
    """A random-weight checkpoint of the test size (or ``config``) in ``folder``, in the released layout."""
    return write_random_checkpoint(config or config_for_tests(), Path(folder) / name, seed=seed)


def tiny_pipeline(config: ModelConfig | None = None, seed: int = 0) -> DynamiCrafterPipeline:
    """A random-weight pipeline of the test size (or ``config``) on the CPU in fp32, without progress bars."""
    from dynamicrafter.pipeline import DynamiCrafterPipeline

    pipe = DynamiCrafterPipeline(random_model(config or config_for_tests(), seed), device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_image(height: int = 72, width: int = 96, seed: int = 0) -> Image.Image:
    """Uniform random RGB pixels."""
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))
