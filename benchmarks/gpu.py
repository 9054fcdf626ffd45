"""GPU speed and memory of the released model sizes with random weights: one prepared script, printing as it goes.

    python benchmarks/gpu.py                      # CUDA: presets 256, 512, 1024; stops starting rows after --budget-s
    python benchmarks/gpu.py --quick              # CPU or CUDA: tiny widths, 2 steps (the test suite runs this)

Per preset (16 frames at the released resolution, both guidance branches in one U-Net batch), rows in this order:

1. headline (bf16, weights resident): seconds per step, whole 50-step DDIM generation (encode, 50 steps, decode)
   and the same with the fast sampler (the first non-DDIM name of ``options.SAMPLER_NAMES``, ``--fast-steps``
   steps), with the peak CUDA memory of each;
2. memory rows, each dtype (fp16, bf16, fp8 weights via torchao with bf16 compute) x each placement (weights
   resident, ``enable_model_cpu_offload``, ``enable_sequential_cpu_offload``): seconds per step and peak CUDA
   memory of a short generation (``--row-steps`` steps + decode); its 50-step time is estimated as encode +
   50 x s/step + decode (marked "est").

Every row is guarded: an out-of-memory error is printed as OOM and the next row runs; no row starts after
``--budget-s`` seconds (default 480: with the last row and the start-up, one call stays within ~10 minutes).
Peak memory is ``torch.cuda.max_memory_allocated`` (tensors; the caching allocator reserves somewhat more).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import dataclass

import torch

from dynamicrafter.checkpoint import build_empty, materialize_buffers
from dynamicrafter.config import config_for_tests, get_preset
from dynamicrafter.options import SAMPLER_NAMES
from dynamicrafter.pipeline import DynamiCrafterPipeline

PROMPT = "a brown bear is walking in a zoo enclosure, some rocks around"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8": torch.bfloat16}
PLACEMENTS = ("resident", "model_offload", "sequential_offload")


@dataclass
class Row:
    preset: str
    dtype: str
    placement: str
    sampler: str = "ddim"
    steps: int = 2
    estimate_steps: int | None = None  # print an estimated time for this many steps


@torch.no_grad()
def random_model(config, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """The five networks with random weights (drawn on ``device``, same values for every row), in ``dtype``."""
    model = build_empty(config)
    gen = torch.Generator(device).manual_seed(seed)
    state = {}
    for name, p in model.named_parameters():
        t = torch.empty(p.shape, device=device)
        if p.ndim > 1:
            t.normal_(0.0, p[0].numel() ** -0.5, generator=gen)
        else:
            t.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.02, generator=gen)
        state[name] = t.to(dtype)
    model.load_state_dict(state, strict=True, assign=True)
    materialize_buffers(model)
    return model.eval().requires_grad_(False)


def build_pipeline(config, row: Row, device: torch.device) -> DynamiCrafterPipeline:
    dtype = DTYPES[row.dtype]
    model = random_model(config, device, dtype)
    if row.placement == "resident":
        pipe = DynamiCrafterPipeline(model, device, dtype)
    else:
        pipe = DynamiCrafterPipeline(model.to("cpu"), "cpu", dtype)
        getattr(pipe, f"enable_{row.placement.removesuffix('_offload')}_cpu_offload")(device)
    if row.dtype == "fp8":
        pipe.enable_fp8_weights()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def image_for(config):
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (config.defaults.height, config.defaults.width, 3), generator=gen, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def generate(pipe: DynamiCrafterPipeline, config, row: Row, steps: int) -> tuple[dict[str, float], float]:
    """One generation (decoded frames); (timings, peak CUDA GiB or nan on the CPU)."""
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = pipe(image_for(config), PROMPT, num_inference_steps=steps, sampler=row.sampler,
               generator=torch.Generator().manual_seed(0), output_type="np")
    if cuda:
        torch.cuda.synchronize()
    timings = dict(out.timings, total=time.perf_counter() - t0)
    return timings, torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")


def run_row(config, row: Row, device: torch.device, warmup: bool) -> str:
    pipe = build_pipeline(config, row, device)
    if warmup:
        generate(pipe, config, row, 1)  # kernels, cuDNN plans, allocator
    timings, peak = generate(pipe, config, row, row.steps)
    per_step = timings["denoise"] / row.steps
    text = (f"{row.preset:>5s} {row.dtype:>4s} {row.placement:>18s} {row.sampler:>10s} {row.steps:3d} steps: "
            f"{per_step:7.3f} s/step, total {timings['total']:7.2f} s")
    if row.estimate_steps:
        other = timings["total"] - timings["denoise"]
        text += f" (est. {row.estimate_steps} steps: {other + row.estimate_steps * per_step:7.2f} s)"
    return text + (f", peak {peak:6.2f} GiB CUDA" if peak == peak else ", peak n/a (CPU)")


def plan(args, fast: str | None) -> list[Row]:
    rows = []
    dtypes = ["fp32", "bf16"] if args.quick else ["fp16", "bf16"]
    if args.fp8:
        dtypes.append("fp8")
    for preset in args.presets:
        rows.append(Row(preset, "bf16", "resident", "ddim", args.ddim_steps))
        if fast is not None:
            rows.append(Row(preset, "bf16", "resident", fast, args.fast_steps))
        rows += [Row(preset, d, p, "ddim", args.row_steps, args.ddim_steps) for d in dtypes for p in PLACEMENTS]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny widths, 2 steps (CPU is fine)")
    parser.add_argument("--presets", nargs="+", default=["256", "512", "1024"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--fast-steps", type=int, default=15)
    parser.add_argument("--row-steps", type=int, default=3, help="steps of each memory row")
    parser.add_argument("--budget-s", type=float, default=480.0, help="start no row after this many seconds")
    parser.add_argument("--no-fp8", dest="fp8", action="store_false", help="skip the fp8 (torchao) rows")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        args.presets, args.ddim_steps, args.fast_steps, args.row_steps = ["test_size"], 2, 2, 2
    fast = next((name for name in SAMPLER_NAMES if name != "ddim"), None)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({gpu}), torch {torch.__version__}, 16 frames (test size: the model's), both guidance "
          f"branches per U-Net batch; fast sampler: "
          f"{fast or 'none in options.SAMPLER_NAMES (only ddim): its rows are skipped'}", flush=True)
    start = time.perf_counter()
    warmed: set[str] = set()
    for row in plan(args, fast):
        if time.perf_counter() - start > args.budget_s:
            print(f"budget of {args.budget_s:.0f} s reached: remaining rows not run", flush=True)
            break
        config = config_for_tests(height=32, width=32) if row.preset == "test_size" else get_preset(row.preset)
        try:
            print(run_row(config, row, device, warmup=row.preset not in warmed and device.type == "cuda"), flush=True)
            warmed.add(row.preset)
        except torch.cuda.OutOfMemoryError:
            print(f"{row.preset:>5s} {row.dtype:>4s} {row.placement:>18s} {row.sampler:>10s}: OOM", flush=True)
        except Exception as e:  # one failing row (e.g. fp8 without torchao) must not stop the table
            print(f"{row.preset:>5s} {row.dtype:>4s} {row.placement:>18s} {row.sampler:>10s}: failed: "
                  f"{type(e).__name__}: {' '.join(str(e).split())[:200]}", flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"done in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
