"""Small shared helpers."""

from __future__ import annotations

import torch


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
          device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, then moved to ``device``.

    Drawing on the generator's device makes a seeded CPU generator give the same noise whatever device the model
    runs on (diffusers' convention).
    """
    gen_device = generator.device if generator is not None else torch.device(device or "cpu")
    noise = torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=torch.float32)
    return noise.to(device=device or gen_device, dtype=dtype)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """fp32 on CPU (this project's CPUs run bf16 matmuls ~250x slower), bf16 on CUDA."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def parse_dtype(name: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    from dynamicrafter.errors import ConfigError

    if name is None or name == "auto":
        return default_dtype(device)
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype '{name}': use one of fp32, fp16, bf16 (or auto)")
    return DTYPES[name]
