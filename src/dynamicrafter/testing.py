"""Random-weight models for tests and benchmarks (no weights can be downloaded here)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dynamicrafter.config import ModelConfig
from dynamicrafter.model import DynamiCrafter


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
