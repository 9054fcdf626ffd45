"""U-Net speed and memory for any preset with random weights.

Prints the FLOPs of one forward, the seconds per denoising step (all classifier-free-guidance branches in one
batch, as the pipeline runs them) and the peak memory (CPU RSS, or CUDA allocated).

    python benchmarks/unet_speed.py --preset 256 --frames 16 --batch 1            # CPU, fp32
    python benchmarks/unet_speed.py --preset 1024 --device cuda --dtype bf16 --repeats 5
    python benchmarks/unet_speed.py --preset 256 --batch 1 --profile 25       # top operators by self CPU time
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from dynamicrafter.config import config_for_tests, get_preset
from dynamicrafter.models.unet import UNet3D
from dynamicrafter.utils import parse_dtype


def build_unet(config, device: torch.device, dtype: torch.dtype) -> UNet3D:
    with torch.device("meta"):
        unet = UNet3D(config.unet)
    unet = unet.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in unet.parameters():  # random weights of a sensible scale (zero-init outputs would be trivial)
            p.normal_(0.0, (1.0 / max(p[0].numel(), 1)) ** 0.5 if p.ndim > 1 else 0.02, generator=gen)
    return unet.to(dtype).eval().requires_grad_(False)


def inputs(config, batch: int, frames: int, height: int, width: int, device, dtype):
    c = config.unet
    h, w = height // 8, width // 8
    x = torch.randn(batch, c.in_channels, frames, h, w, device=device, dtype=dtype)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    context = torch.randn(batch, c.text_context_len + c.image_tokens_per_frame * frames, c.context_dim,
                          device=device, dtype=dtype)
    fs = torch.full((batch,), c.default_fs, device=device, dtype=torch.long)
    return x, t, context, fs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="256", help="256, 512, 1024, 512_interp or test_size")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1, help="videos per call")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--branches", type=int, default=2, help="guidance branches per step (1: no CFG, 2: CFG)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=1, help="timed steps (after one warm-up on CUDA)")
    parser.add_argument("--model-channels", type=int, help="narrower U-Net of the preset's layout (quick trials)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--variant", action="append", default=[], choices=sorted(VARIANTS),
                        help="candidate change, timed against the current code alternately (--repeats rounds)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="profile one more step (torch.profiler) and print its top N operators by self CPU time")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = config_for_tests() if args.preset == "test_size" else get_preset(args.preset)
    if args.model_channels:
        config = dataclasses.replace(config, unet=dataclasses.replace(config.unet, model_channels=args.model_channels))
    device = torch.device(args.device)
    dtype = parse_dtype(args.dtype, device)
    height, width = args.height or config.defaults.height, args.width or config.defaults.width
    n = args.batch * args.branches
    torch.set_flush_denormal(True)

    with torch.device("meta"):
        meta = UNet3D(config.unet)
    with FlopCounterMode(display=False) as counter:
        meta(*inputs(config, 1, args.frames, height, width, "meta", torch.float32))
    tflop = counter.get_total_flops() / 1e12

    unet = build_unet(config, device, dtype)
    params = sum(p.numel() for p in unet.parameters())
    x = inputs(config, n, args.frames, height, width, device, dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            unet(*x)  # warm-up
        torch.cuda.synchronize()
    times = []
    with torch.no_grad():
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = unet(*x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    assert torch.isfinite(out).all()
    if device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB CUDA allocated"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB CPU RSS"
    step = min(times)
    print(f"preset {args.preset}: U-Net {params / 1e6:.1f} M parameters, {height}x{width}, {args.frames} frames")
    print(f"  one forward of 1 video: {tflop:.2f} TFLOP")
    print(f"  denoising step = {args.branches} branches x batch {args.batch} in one call on {device} "
          f"({str(dtype).removeprefix('torch.')}): {step:.2f} s/step ({n * tflop * 1e3 / step:.0f} GFLOP/s)")
    print(f"  peak memory: {peak}")
    print(f"  50-step sampling estimate: {50 * step / 60:.1f} min")
    for name in args.variant:
        compare_variant(unet, x, name, args.repeats)
    if args.profile:
        profile_step(unet, x, args.profile)


# Candidate changes, measured against the current code in the same process on the same weights (side by side).


@contextlib.contextmanager
def channels_last(unet: UNet3D):
    """Convolution weights in channels-last layout (oneDNN's native NHWC), activations follow."""
    convs = [m for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:
        conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
    try:
        yield unet
    finally:
        for conv in convs:
            conv.weight.data = conv.weight.data.contiguous()


@contextlib.contextmanager
def short_attention_as_matmul(unet: UNet3D):
    """Attention over short sequences (temporal: 16 frames per pixel) as two batched matmuls + softmax instead of
    the fused SDPA kernel."""
    from dynamicrafter.models import attention

    original = attention.Attention._attend

    def attend(self, q, k, v, mask, circular):
        if self.relative_position_k is None and k.shape[2] <= 64:
            sim = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # (B, heads, N, M)
            if mask is not None:
                sim = sim.masked_fill(~mask, -torch.finfo(sim.dtype).max)
            return torch.matmul(sim.softmax(dim=-1), v)
        return original(self, q, k, v, mask, circular)

    attention.Attention._attend = attend
    try:
        yield unet
    finally:
        attention.Attention._attend = original


@contextlib.contextmanager
def compiled(unet: UNet3D):
    """torch.compile (inductor: fused norm + activation and pointwise chains); the first call compiles."""
    yield torch.compile(unet)


@contextlib.contextmanager
def temporal_tokens_contiguous(unet: UNet3D):
    """Temporal transformers: one permute-copy straight to contiguous (b*h*w, t, c) tokens and back (the current
    code copies to (b*h*w, c, t) and feeds a transposed view to the linear layers)."""
    from dynamicrafter.models import attention

    original = attention.TemporalTransformer.forward

    def forward(self, x, controls=attention.AS_TRAINED):
        if not self.use_linear:
            return original(self, x, controls)
        b, c, t, h, w = x.shape
        tokens = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)  # (bhw, t, c), contiguous
        tokens = self.proj_in(tokens)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril() if self.causal else None
        for block in self.transformer_blocks:
            tokens = block(tokens, mask=mask, controls=controls)
        tokens = self.proj_out(tokens)  # (bhw, t, c)
        return tokens.view(b, h, w, t, c).permute(0, 4, 3, 1, 2) + x

    attention.TemporalTransformer.forward = forward
    try:
        yield unet
    finally:
        attention.TemporalTransformer.forward = original


VARIANTS = {"channels_last": channels_last, "short_attention_as_matmul": short_attention_as_matmul,
            "temporal_tokens_contiguous": temporal_tokens_contiguous, "compile": compiled}


@torch.no_grad()
def compare_variant(unet: UNet3D, x: tuple, name: str, repeats: int) -> None:
    """Alternate the current code and the variant on the same weights and inputs; print s/step and the ratio."""
    times: dict[str, list[float]] = {"current": [], name: []}
    outputs = {}
    if name == "compile":
        with compiled(unet) as fast:
            t0 = time.perf_counter()
            fast(*x)
            print(f"  compile: first call {time.perf_counter() - t0:.1f} s (compile + one step)")
    for round_ in range(repeats):
        for side in (("current", name) if round_ % 2 == 0 else (name, "current")):
            context = VARIANTS[side](unet) if side != "current" else contextlib.nullcontext(unet)
            with context as model:
                t0 = time.perf_counter()
                outputs[side] = model(*x)
                times[side].append(time.perf_counter() - t0)
        print(f"  round {round_ + 1}: current {times['current'][-1]:.3f} s, {name} {times[name][-1]:.3f} s", flush=True)
    ref = outputs["current"].double()
    rel = ((outputs[name].double() - ref).abs().max() / ref.abs().max()).item()
    ratios = [v / c for v, c in zip(times[name], times["current"])]
    print(f"  {name}: ratio variant/current min-to-min {min(times[name]) / min(times['current']):.3f}, per round "
          f"{', '.join(f'{r:.3f}' for r in ratios)}; max rel difference of outputs {rel:.1e}")


@torch.no_grad()
def profile_step(unet: UNet3D, x: tuple, rows: int) -> None:
    """One step under torch.profiler: the operators with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x[0].is_cuda else [])
    with profile(activities=activities) as prof:
        unet(*x)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))


if __name__ == "__main__":
    main()
