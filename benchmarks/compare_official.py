"""Side-by-side speed and memory of this project and the original DynamiCrafter code, on the same machine.

    # U-Net step: both U-Nets in one process with the SAME random weights (shared tensors), run alternately on the
    # same inputs (16 frames, 256 x 256 -> 32 x 32 latents, both guidance branches in one batch of 2)
    python benchmarks/compare_official.py unet --original /tmp/dc_orig --repeats 3

    # whole generation: a released-layout random-weight checkpoint, each side in its own fresh process
    # (load, encode, N DDIM steps with CFG, decode), alternately; wall time and peak RSS (getrusage) per run
    python benchmarks/compare_official.py generation --original /tmp/dc_orig --checkpoint /tmp/dc256.ckpt \\
        --write-checkpoint --steps 2 --repeats 2

    # quick (tiny widths, a few steps; what the test suite runs): without --original only our side runs
    python benchmarks/compare_official.py unet --quick
    python benchmarks/compare_official.py generation --quick

The original code is imported from ``--original`` (a checkout of github Doubiiu/DynamiCrafter, see
``tools/compare_reference.py`` for the reference environment and its run-time patches: torchvision stub, CPU DDIM
buffers, a random-weight OpenCLIP model of the ViT-H/14 shape instead of a download). Nothing of it is copied here.
The original side runs as released for inference (``use_checkpoint=False``, einsum attention as without xformers,
its checkpoint loaded with ``torch.load`` + ``load_state_dict``, the CFG branches as two U-Net calls per step);
ours as the command line runs it on the CPU (``from_checkpoint(low_memory=True)``; ``--ours-mode default`` for the
plain API). Peak memory of a U-Net step is the rise of the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs) above the RSS before the step, with glibc's malloc returning freed blocks to the system.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a brown bear is walking in a zoo enclosure, some rocks around"
VIT_H_14 = dict(embed_dim=1024, vision_cfg=dict(image_size=224, layers=32, width=1280, head_width=80, patch_size=14),
                text_cfg=dict(context_length=77, vocab_size=49408, width=1024, heads=16, layers=24))
GIB = 2**30


# ----------------------------------------------------------------------------------------------------------------
# Both sides
# ----------------------------------------------------------------------------------------------------------------


def reference_tool():
    """tools/compare_reference.py as a module (the original code's loader, the small parity configs)."""
    spec = importlib.util.spec_from_file_location("compare_reference", ROOT / "tools" / "compare_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def our_config(quick: bool, model_channels: int | None = None):
    import dataclasses

    from dynamicrafter.config import get_preset

    config = reference_tool().parity_config("256") if quick else get_preset("256")
    if model_channels:  # a narrower U-Net of the same layout (both sides), for machines short of memory
        config = dataclasses.replace(config, unet=dataclasses.replace(config.unet, model_channels=model_channels))
    return config


def open_reference(original: Path, stub_dir: str):
    tool = reference_tool()
    tool.write_torchvision_stub(stub_dir)
    return tool.Reference(original.resolve(), stub_dir)


def original_model_config(ref, quick: bool, model_channels: int | None = None):
    """The released 256 inference YAML (reduced widths with --quick), as ``run_inference`` uses it."""
    from omegaconf import OmegaConf

    cfg = ref.model_config("256") if quick else OmegaConf.load(ref.path / "configs" / "inference_256_v1.0.yaml")
    p = cfg.model.params
    if model_channels:
        p.unet_config.params.model_channels = model_channels
    p.unet_config.params.use_checkpoint = False  # as the released inference script sets it
    p.cond_stage_config.params.device = "cpu"
    p.img_cond_stage_config.params.device = "cpu"
    if not quick:
        ref._clip_config = VIT_H_14
    else:
        ref._clip_config = dict(embed_dim=12, vision_cfg=dict(image_size=224, layers=2, width=48, head_width=24,
                                                              patch_size=14),
                                text_cfg=dict(context_length=77, vocab_size=49408, width=12, heads=2, layers=3))
    return cfg


def rss_gib() -> float:
    return _status_kib("VmRSS") / 2**20


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


class PeakRSS:
    """Peak RSS of this process over a block and its rise above the RSS at the start (GiB)."""

    def __enter__(self) -> PeakRSS:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.start = rss_gib()
        return self

    def __exit__(self, *exc) -> None:
        self.peak = _status_kib("VmHWM") / 2**20
        self.rise = self.peak - self.start


def return_freed_memory() -> None:
    """glibc malloc: blocks of 1 MiB and more are mapped and unmapped one by one (no dynamic threshold), so that
    freed activations leave the RSS and each step's peak is its own."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 20)
    libc.mallopt(m_trim_threshold, 1 << 20)


# ----------------------------------------------------------------------------------------------------------------
# U-Net step
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def random_unet(config, seed: int = 0):
    """Our U-Net with random weights (normal, std 1/sqrt(fan_in); 1-d tensors near 0 or 1), built without init."""
    from dynamicrafter.models.unet import UNet3D

    with torch.device("meta"):
        unet = UNet3D(config.unet)
    unet = unet.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    for name, p in unet.named_parameters():
        if p.ndim > 1:
            p.normal_(0.0, p[0].numel() ** -0.5, generator=gen)
        elif name.endswith(".alpha"):
            p.uniform_(-1.5, 1.5, generator=gen)
        else:
            p.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.02, generator=gen)
    return unet.eval().requires_grad_(False)


def original_unet(ref, cfg, ours):
    """The original UNetModel built on the meta device and given OUR tensors under the released names (no copy)."""
    from dynamicrafter import keymap

    with torch.device("meta"):
        unet = ref.utils.instantiate_from_config(cfg.model.params.unet_config)
    state = keymap.UNET_KEYMAP.convert_to_official(dict(ours.state_dict()))
    unet.load_state_dict(state, strict=True, assign=True)
    ptrs = {t.data_ptr() for t in ours.state_dict().values()}
    shared = sum(t.data_ptr() in ptrs for t in unet.state_dict().values())
    return unet.eval().requires_grad_(False), f"{shared} of {len(unet.state_dict())}"


def unet_inputs(config, frames: int, latent: int, seed: int = 1):
    c = config.unet
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c.in_channels, frames, latent, latent, generator=gen)  # [z_t ; VDG] of both branches
    t = torch.tensor([501, 501])
    context = torch.randn(2, c.text_context_len + c.image_tokens_per_frame * frames, c.context_dim, generator=gen)
    fs = torch.full((2,), c.default_fs, dtype=torch.long)
    return x, t, context, fs


def timed_step(fn) -> tuple[torch.Tensor, float, PeakRSS]:
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
    return out, seconds, peak


@torch.no_grad()
def run_unet(args) -> None:
    return_freed_memory()
    config = our_config(args.quick)
    frames, latent = (config.unet.temporal_length, 8) if args.quick else (args.frames, args.latent)
    ours = random_unet(config)
    weights = sum(p.numel() * p.element_size() for p in ours.parameters()) / GIB
    x, t, context, fs = unet_inputs(config, frames, latent)
    print(f"U-Net step: {'quick (reduced widths)' if args.quick else 'preset 256'}, {frames} frames, input "
          f"{tuple(x.shape)} (both guidance branches in one batch), fp32, {torch.get_num_threads()} threads, "
          f"weights {weights:.2f} GiB", flush=True)
    sides = {"ours": lambda: ours(x, t, context, fs)}
    if args.original is not None:
        with tempfile.TemporaryDirectory() as stub:
            ref = open_reference(args.original, stub)
            orig, shared = original_unet(ref, original_model_config(ref, args.quick), ours)
        print(f"original U-Net built from {args.original} with our tensors ({shared} shared, not copied)")
        sides["original"] = lambda: orig(x, t, context=context, fs=fs)
    else:
        print("original: not run (no --original checkout given): our side alone")
    times: dict[str, list[float]] = {name: [] for name in sides}
    rises: dict[str, list[float]] = {name: [] for name in sides}
    outputs = {}
    for round_ in range(args.repeats):
        order = sorted(sides) if round_ % 2 == 0 else sorted(sides, reverse=True)  # alternate who goes first
        line = []
        for name in order:
            outputs[name], seconds, peak = timed_step(sides[name])
            times[name].append(seconds)
            rises[name].append(peak.rise)
            line.append(f"{name} {seconds:.2f} s (peak RSS {peak.peak:.2f} GiB, +{peak.rise:.2f} GiB)")
        print(f"round {round_ + 1}: " + ", ".join(line), flush=True)
    report_unet(times, rises, outputs, weights)


def report_unet(times: dict, rises: dict, outputs: dict, weights: float) -> None:
    for name in sorted(times):
        print(f"{name:8s} s/step: min {min(times[name]):.2f}, median {statistics.median(times[name]):.2f}; step "
              f"memory above the weights: max +{max(rises[name]):.2f} GiB")
    if "original" not in times:
        return
    ref = outputs["original"].double()
    rel = ((outputs["ours"].double() - ref).abs().max() / ref.abs().max()).item()
    print(f"parity: max|ours - original| / max|original| = {rel:.2e} ({'ok' if rel < 1e-4 else 'MISMATCH'})")
    pairs = [o / r for o, r in zip(times["ours"], times["original"])]
    print(f"RATIO time ours/original: min-to-min {min(times['ours']) / min(times['original']):.3f}, per round "
          f"{', '.join(f'{p:.3f}' for p in pairs)}")
    ours_mem, orig_mem = max(rises["ours"]), max(rises["original"])
    print(f"RATIO step memory ours/original (activations above the shared weights): {ours_mem / orig_mem:.3f}; "
          f"with the weights ({weights:.2f} GiB): {(weights + ours_mem) / (weights + orig_mem):.3f}")


# ----------------------------------------------------------------------------------------------------------------
# Whole generation (each side in a fresh process)
# ----------------------------------------------------------------------------------------------------------------


def synthetic_pixels(size: int):
    """(3, size, size) in [-1, 1]: the parity tool's integer image recipe."""
    return reference_tool().synthetic_image(size, size, 7)[0]


@torch.no_grad()
def worker_original(args) -> dict:
    with tempfile.TemporaryDirectory() as stub:
        ref = open_reference(args.original, stub)
        cfg = original_model_config(ref, args.quick, args.model_channels)
        t0 = time.perf_counter()
        model = ref.utils.instantiate_from_config(cfg.model)  # as run_inference: build, then load the checkpoint
        model.perframe_ae = False  # the released 256 command line decodes all frames at once
        model = ref.inference.load_model_checkpoint(model, str(args.checkpoint)).eval()
        loaded = time.perf_counter()
        config = our_config(args.quick, args.model_channels)
        size, down = config.defaults.height, config.vae.downscale  # 256 px, 32 x 32 latents (--quick: 32 px, 16)
        frames = cfg.model.params.unet_config.params.temporal_length
        videos = synthetic_pixels(size)[None, :, None].expand(-1, -1, frames, -1, -1)  # as load_data_prompts
        noise_shape = [1, 4, frames, size // down, size // down]
        video = ref.inference.image_guided_synthesis(model, [PROMPT], videos, noise_shape, 1, args.steps, 1.0, 7.5,
                                                     None, 3, True, False, False, False, "uniform", 0.0)
        done = time.perf_counter()
    return {"load_s": loaded - t0, "generate_s": done - loaded, "frames": tuple(video.shape)}


@torch.no_grad()
def worker_ours(args) -> dict:
    from PIL import Image

    from dynamicrafter.pipeline import DynamiCrafterPipeline

    config = our_config(args.quick, args.model_channels)
    t0 = time.perf_counter()
    pipe = DynamiCrafterPipeline.from_checkpoint(args.checkpoint, config=config, device="cpu", dtype=torch.float32,
                                                 low_memory=args.ours_mode == "low_memory")
    pipe.set_progress_bar_config(disable=True)
    loaded = time.perf_counter()
    pixels = synthetic_pixels(config.defaults.height)
    image = Image.fromarray(((pixels + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    out = pipe(image, PROMPT, num_inference_steps=args.steps, eta=1.0, guidance_scale=7.5, frame_stride=3,
               generator=torch.Generator().manual_seed(123), output_type="np")
    done = time.perf_counter()
    return {"load_s": loaded - t0, "generate_s": done - loaded, "frames": tuple(out.frames.shape),
            "timings": out.timings}


def run_worker(args) -> None:
    sys.setrecursionlimit(10000)
    result = worker_original(args) if args.side == "original" else worker_ours(args)
    result["total_s"] = result["load_s"] + result["generate_s"]
    from dynamicrafter.utils import peak_rss_bytes

    result["peak_rss_gib"] = peak_rss_bytes() / GIB  # its own peak (not ru_maxrss: see peak_rss_bytes)
    print("RESULT " + json.dumps(result), flush=True)


def spawn(side: str, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", "--side", side, "--checkpoint",
           str(args.checkpoint), "--steps", str(args.steps), "--ours-mode", args.ours_mode, "--threads",
           str(args.threads)]
    if args.original is not None:
        cmd += ["--original", str(args.original)]
    if args.quick:
        cmd.append("--quick")
    if args.model_channels:
        cmd += ["--model-channels", str(args.model_channels)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{side} worker failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def ensure_checkpoint(args) -> None:
    if args.checkpoint is None:
        args.checkpoint = Path(tempfile.mkdtemp(prefix="compare_official_")) / "model.ckpt"
        args.write_checkpoint = args.delete_checkpoint = True
    if args.checkpoint.exists():
        return
    if not args.write_checkpoint:
        sys.exit(f"{args.checkpoint} does not exist: add --write-checkpoint to write a random-weight one")
    from dynamicrafter.testing import write_random_checkpoint

    t0 = time.perf_counter()
    write_random_checkpoint(our_config(args.quick, args.model_channels), args.checkpoint, seed=0)
    print(f"wrote {args.checkpoint} ({args.checkpoint.stat().st_size / GIB:.2f} GiB, released layout, random "
          f"weights) in {time.perf_counter() - t0:.0f} s", flush=True)


def run_generation(args) -> None:
    ensure_checkpoint(args)
    sides = ["original", "ours"] if args.original is not None else ["ours"]
    if args.original is None:
        print("original: not run (no --original checkout given): our side alone")
    width = f", U-Net model_channels {args.model_channels}" if args.model_channels else ""
    print(f"whole generation: {args.checkpoint.name} ({'quick' if args.quick else 'preset 256'}{width}), one image, "
          f"{args.steps} DDIM steps (eta 1, CFG 7.5), decode; ours: {args.ours_mode}; each run a fresh process",
          flush=True)
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for round_ in range(args.repeats):
        for side in sides if round_ % 2 == 0 else sides[::-1]:
            r = spawn(side, args)
            runs[side].append(r)
            print(f"run {round_ + 1} {side:8s}: load {r['load_s']:.1f} s, encode + {args.steps} steps + decode "
                  f"{r['generate_s']:.1f} s, total {r['total_s']:.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB",
                  flush=True)
    for side in sides:
        total = [r["total_s"] for r in runs[side]]
        peak = [r["peak_rss_gib"] for r in runs[side]]
        print(f"{side:8s}: total min {min(total):.1f} s (spread {max(total) - min(total):.1f} s), peak RSS min "
              f"{min(peak):.2f} GiB (spread {max(peak) - min(peak):.2f} GiB)")
    if "original" in runs:
        best = {side: min(r["total_s"] for r in runs[side]) for side in sides}
        mem = {side: min(r["peak_rss_gib"] for r in runs[side]) for side in sides}
        print(f"RATIO whole generation ours/original: time {best['ours'] / best['original']:.3f}, peak RSS "
              f"{mem['ours'] / mem['original']:.3f}")
    if args.delete_checkpoint:
        args.checkpoint.unlink()
        print(f"deleted {args.checkpoint}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("unet", "generation", "_worker"):
        p = sub.add_parser(name)
        p.add_argument("--original", type=Path, help="checkout of the original DynamiCrafter code")
        p.add_argument("--quick", action="store_true", help="reduced widths and sizes (tests)")
        p.add_argument("--repeats", type=int, default=2, help="alternating rounds")
        p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    unet, gen, worker = (sub.choices[n] for n in ("unet", "generation", "_worker"))
    unet.add_argument("--frames", type=int, default=16)
    unet.add_argument("--latent", type=int, default=32, help="latent height = width (256 px / 8)")
    for p in (gen, worker):
        p.add_argument("--checkpoint", type=Path, help="released-layout checkpoint (default: a temporary one)")
        p.add_argument("--steps", type=int, default=2)
        p.add_argument("--ours-mode", choices=["low_memory", "default"], default="low_memory",
                       help="low_memory: as the command line on the CPU; default: the plain API")
        p.add_argument("--model-channels", type=int,
                       help="a narrower U-Net of the 256 layout on both sides (the checkpoint must match it)")
    gen.add_argument("--write-checkpoint", action="store_true", help="write a random-weight one if missing")
    gen.add_argument("--delete-checkpoint", action="store_true", help="delete the checkpoint at the end")
    worker.add_argument("--side", choices=["original", "ours"], required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick and args.command != "_worker":
        args.steps = min(getattr(args, "steps", 2), 2)
        args.repeats = min(args.repeats, 2)
    {"unet": run_unet, "generation": run_generation, "_worker": run_worker}[args.command](args)


if __name__ == "__main__":
    main()
