"""fp16 and bf16 against fp32 on the CPU: seconds per U-Net forward, side by side in one process.

The forward is one denoising step as the pipeline runs it (both classifier-free-guidance branches in one batch).
The dtypes take turns, round after round, so a change in the machine's speed hits each of them alike; the median
per dtype and its ratio to fp32 are printed. This is the measurement behind the pipeline's warning when a
half-precision dtype is chosen on a CPU.

    python benchmarks/half_precision_cpu.py                                      # the shipped small model's U-Net
    python benchmarks/half_precision_cpu.py --preset 256 --frames 2 --rounds 2   # a released size, random weights
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from dynamicrafter.config import ModelConfig, get_preset
from dynamicrafter.models.unet import UNet3D

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def shipped_unet() -> tuple[ModelConfig, torch.nn.Module]:
    from dynamicrafter.pipeline import DynamiCrafterPipeline

    pipe = DynamiCrafterPipeline.from_checkpoint(device="cpu", dtype="fp32")
    return pipe.config, pipe.model.unet


def random_unet(config: ModelConfig) -> torch.nn.Module:
    unet = UNet3D(config.unet)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in unet.parameters():  # random weights of a sensible scale (zero-init outputs would be trivial)
            p.normal_(0.0, (1.0 / max(p[0].numel(), 1)) ** 0.5 if p.ndim > 1 else 0.02, generator=gen)
    return unet


def step_inputs(config: ModelConfig, frames: int) -> tuple[torch.Tensor, ...]:
    """x_t, t, context and fs of one guided step (2 branches)."""
    c = config.unet
    h, w = config.defaults.height // config.vae.downscale, config.defaults.width // config.vae.downscale
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, c.in_channels, frames, h, w, generator=gen)  # (b c t h w)
    context = torch.randn(2, c.text_context_len + c.image_tokens_per_frame * frames, c.context_dim, generator=gen)
    return x, torch.full((2,), 500, dtype=torch.long), context, torch.full((2,), c.default_fs, dtype=torch.long)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help="256, 512, 1024 or 512_interp with random weights (default: the shipped "
                                         "small model)")
    parser.add_argument("--frames", type=int, help="frames (default: the model's temporal length)")
    parser.add_argument("--rounds", type=int, default=5, help="timed forwards per dtype (after one warm-up each)")
    parser.add_argument("--dtypes", default="fp32,fp16,bf16")
    args = parser.parse_args()
    torch.set_flush_denormal(True)

    config, unet = shipped_unet() if args.preset is None else (get_preset(args.preset), None)
    unet = unet if unet is not None else random_unet(config)
    inputs = step_inputs(config, args.frames or config.unet.temporal_length)
    names = args.dtypes.split(",")
    nets = {n: copy.deepcopy(unet).to(DTYPES[n]).eval().requires_grad_(False) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for rnd in range(args.rounds + 1):
            for name in names:
                x, t, context, fs = inputs
                start = time.perf_counter()
                nets[name](x.to(DTYPES[name]), t, context.to(DTYPES[name]), fs)
                if rnd:  # round 0 warms up
                    times[name].append(time.perf_counter() - start)
    base = statistics.median(times[names[0]])
    print(f"model {config.name}, x {tuple(inputs[0].shape)}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds, torch {torch.__version__}")
    for name in names:
        med = statistics.median(times[name])
        print(f"{name}: median {med * 1000:.1f} ms per forward (min {min(times[name]) * 1000:.1f}), "
              f"{med / base:.2f}x {names[0]}")


if __name__ == "__main__":
    main()
