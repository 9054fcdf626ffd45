"""Peak memory and time of one training step (forward + backward + AdamW step) with random weights.

Configurations: spatial-only (P + spatial layers trainable, stage ii/iii) vs the full U-Net (P + spatial + temporal),
each with gradient checkpointing off and on; ``lora`` trains a LoRA adapter (``--lora-rank``, the spatial attention
projections, ``dynamicrafter train --lora``) with everything else frozen (``--configs spatial,lora,lora:ckpt``).
Every configuration runs in its own child process so that its peak
memory is its own: CPU peak RSS (VmHWM), or CUDA peak allocated memory.

The step is the training module's (:class:`dynamicrafter.training.module.DynamiCrafterTraining`): VDG latents
concatenated with the noise, context = text tokens + P(CLIP image tokens), dynamic rescale, v target, MSE. With
``--encoders precomputed`` (default) the frozen VAE and CLIP towers are not built: random latents, text tokens and
CLIP image tokens stand in for their outputs (as when training on pre-encoded data); ``--encoders model`` builds
them and runs the full step from pixels.

Memory that cannot fit is not attempted: before a run the weights + gradients + AdamW states are estimated
(4 bytes each, fp32) and compared with the available memory. A configuration whose AdamW step does not fit is
measured without the optimizer step (forward + backward only; marked "fwd+bwd") and its AdamW states (8 bytes per
trainable parameter) are added to give an *estimated* full-step peak; one where even that does not fit is skipped,
with the reason printed.

    python benchmarks/train_memory.py --preset 512 --frames 2 --height 256 --width 256     # CPU (what fits here)
    python benchmarks/train_memory.py --preset 512 --device cuda --precision bf16-mixed    # 16 x 320 x 512
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

GIB = 1024**3
CONFIGS = [("spatial", False), ("spatial", True), ("full", False), ("full", True)]
OVERHEAD_BYTES = 1.5 * GIB  # interpreter, torch, and workspace beyond the tensors counted in the estimate


@dataclass
class Counts:
    total: int
    trainable: int


def parameter_counts(preset: str, trainable: str, encoders: str, lora_rank: int = 16) -> Counts:
    """Parameters built for the run and those trained (counted on the meta device: no memory)."""
    from dynamicrafter.checkpoint import build_empty
    from dynamicrafter.training.model_setup import parameter_groups

    model = build_empty(_config(preset))
    groups = parameter_groups(model)
    params = dict(model.named_parameters())
    trained = {"P", "spatial"} | ({"temporal"} if trainable == "full" else set())
    built = {"P", "spatial", "temporal"} | ({"other"} if encoders == "model" else set())
    total = sum(params[n].numel() for n, g in groups.items() if g in built)
    if trainable == "lora":
        from dynamicrafter.lora import LoraSpec, target_modules

        layers = [model.get_submodule(n) for n in target_modules(model, LoraSpec(lora_rank))]
        return Counts(total, sum(lora_rank * (m.in_features + m.out_features) for m in layers))
    return Counts(total, sum(params[n].numel() for n, g in groups.items() if g in trained))


def _config(preset: str):
    from dynamicrafter.config import get_preset
    from dynamicrafter.training.config import TEST_SIZE_MODELS

    return TEST_SIZE_MODELS[preset]() if preset in TEST_SIZE_MODELS else get_preset(preset)


def available_bytes(device: str) -> int:
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free)
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return info.get("MemAvailable", info["MemTotal"])


# ----------------------------------------------------------------------------------------------------------------
# One configuration (child process)
# ----------------------------------------------------------------------------------------------------------------


def _random_model(args: argparse.Namespace, config, device):
    """The model of ``config`` with random U-Net and P weights (allocated one network at a time) and, with
    ``--encoders model``, the frozen networks in their default initialization."""
    import torch

    from dynamicrafter.checkpoint import build_empty

    model = build_empty(config)  # meta: nothing allocated yet
    gen = torch.Generator(device="cpu").manual_seed(0)
    for net in (model.unet, model.image_proj):
        net.to_empty(device=device)
        with torch.no_grad():
            for p in net.parameters():  # random weights of a sensible scale, one tensor at a time
                p.copy_(torch.randn(p.shape, generator=gen).mul_(0.02 if p.ndim < 2 else p[0].numel() ** -0.5))
    if args.encoders == "model":
        from dynamicrafter.models.clip import CLIPImageEncoder, CLIPTextEncoder
        from dynamicrafter.models.vae import VideoVAE

        model.vae = VideoVAE(config.vae).to(device)
        model.text_encoder = CLIPTextEncoder(config.text_encoder).to(device)
        model.image_encoder = CLIPImageEncoder(config.image_encoder).to(device)
    return model


def _step_loss(args: argparse.Namespace, module, model, config, device, step: int):
    """The training loss of one random batch: pixels through every network (``--encoders model``) or random
    latents and embeddings (the frozen encoders' outputs precomputed, as the released training does not)."""
    import torch

    from dynamicrafter.conditioning import build_conditioning, vdg_latents

    b, t = args.batch, args.frames
    h, w = args.height // model.vae.downscale, args.width // model.vae.downscale
    g = torch.Generator().manual_seed(step)
    if args.encoders == "model":
        video = torch.rand(b, 3, t, args.height, args.width, generator=g).mul_(2).sub_(1).to(device)
        batch = {"video": video, "caption": ["a bear walking"] * b, "fps": torch.full((b,), 8),
                 "frame_stride": torch.full((b,), 3)}
        return module.compute_loss(batch, g)
    z0 = torch.randn(b, config.unet.out_channels, t, h, w, generator=g).to(device)
    text = torch.randn(b, config.unet.text_context_len, config.unet.context_dim, generator=g).to(device)
    tokens = torch.randn(b, 257, config.resampler.embedding_dim, generator=g).to(device)
    cond = build_conditioning(model, fs=torch.full((b,), 8), text_embeds=text,
                              image_embeds=model.image_proj(tokens),  # P is trained
                              concat=vdg_latents(z0[:, :, :1], t))
    return module.diffusion_loss(z0, cond, g)


def run_one(args: argparse.Namespace) -> dict:
    """``--steps`` training steps of one configuration; peak memory and the last step's seconds."""
    import torch

    from dynamicrafter.training.config import TrainConfig, get_stage
    from dynamicrafter.training.model_setup import set_gradient_checkpointing
    from dynamicrafter.training.module import DynamiCrafterTraining

    device = torch.device(args.device)
    config = _config(args.preset)
    model = _random_model(args, config, device)
    set_gradient_checkpointing(model, args.gradient_checkpointing)
    lora = args.trainable == "lora"
    stage = get_stage("finetune", "spatial" if lora else args.trainable)
    train_config = TrainConfig(stage="finetune", init="-", finetune_trainable="spatial" if lora else args.trainable,
                               lr=1e-5, lora_rank=args.lora_rank if lora else None)
    module = DynamiCrafterTraining(model, stage, train_config)
    module.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5) if args.optimizer == "adamw" else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    times = []
    for step in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = _step_loss(args, module, model, config, device, step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        if optimizer is not None:
            optimizer.step()
        for p in params:
            p.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        from dynamicrafter.utils import peak_rss_bytes

        peak = peak_rss_bytes()  # its own peak (not ru_maxrss: see peak_rss_bytes)
    return {"peak_bytes": peak, "step_s": times[-1], "first_step_s": times[0], "loss": float(loss)}


# ----------------------------------------------------------------------------------------------------------------
# The table (parent process)
# ----------------------------------------------------------------------------------------------------------------


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="512", help="256, 512, 1024, 512_interp, test_size, test_size_v")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, help="default: the preset's (320 for 512)")
    parser.add_argument("--width", type=int, help="default: the preset's (512 for 512)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    parser.add_argument("--encoders", choices=["precomputed", "model"], default="precomputed")
    parser.add_argument("--steps", type=int, default=None, help="steps per configuration; the last is timed "
                        "(default: 2 on CUDA, 1 on CPU)")
    parser.add_argument("--configs", default="all",
                        help="comma list of spatial/full/lora + :ckpt, e.g. spatial,full:ckpt,lora")
    parser.add_argument("--lora-rank", type=int, default=16, help="rank of the lora configuration (default 16)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per configuration")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args()


def _measure(args: argparse.Namespace, child: dict, trainable: str, ckpt: bool) -> tuple:
    """One table row: the configuration run in a fresh process (AdamW measured when it fits, else estimated)."""
    counts = parameter_counts(args.preset, trainable, args.encoders, args.lora_rank)
    weights, grads, adam = 4 * counts.total, 4 * counts.trainable, 8 * counts.trainable
    avail = available_bytes(child["device"])
    label = f"{trainable:<8} {'on' if ckpt else 'off':<5}"
    if weights + grads + adam + OVERHEAD_BYTES <= avail:
        optimizer, note = "adamw", "measured"
    elif weights + grads + OVERHEAD_BYTES <= avail:
        optimizer, note = "none", "fwd+bwd measured; AdamW states added (estimate)"
    else:
        return (label, counts, None, None, f"skipped: weights + gradients need {(weights + grads) / GIB:.1f} GiB, "
                f"{avail / GIB:.1f} GiB available")
    child = {**child, "trainable": trainable, "gradient_checkpointing": ckpt, "optimizer": optimizer}
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(child)], capture_output=True,
                              text=True, timeout=args.timeout, env={**os.environ})
    except subprocess.TimeoutExpired:
        return (label, counts, None, None, f"skipped: longer than --timeout {args.timeout} s")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
        return (label, counts, None, None,
                "killed (out of memory)" if proc.returncode in (-9, 137) else f"failed: {tail}")
    result = json.loads(lines[0][len("RESULT "):])
    peak = result["peak_bytes"] + (adam if optimizer == "none" else 0)
    print(f"  done {label.strip()}: {peak / GIB:.2f} GiB, {result['step_s']:.1f} s", flush=True)
    return (label, counts, peak, result["step_s"], note)


def main() -> None:
    args = _parse_args()
    if args.child:
        child = argparse.Namespace(**json.loads(args.child))
        print("RESULT " + json.dumps(run_one(child)), flush=True)
        return

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = _config(args.preset)
    height, width = args.height or config.defaults.height, args.width or config.defaults.width
    steps = args.steps or (2 if device == "cuda" else 1)
    wanted = CONFIGS if args.configs == "all" else [
        (c.split(":")[0], c.endswith(":ckpt")) for c in args.configs.split(",")]
    print(f"training step memory: preset {args.preset}, batch {args.batch}, {args.frames} frames, {height}x{width}, "
          f"{device}, precision {args.precision}, encoders {args.encoders}, AdamW (fp32 states), "
          f"{steps} step(s) per configuration")
    child = {"preset": args.preset, "frames": args.frames, "height": height, "width": width, "batch": args.batch,
             "device": device, "precision": args.precision, "encoders": args.encoders, "steps": steps,
             "lora_rank": args.lora_rank}
    rows = [_measure(args, child, trainable, ckpt) for trainable, ckpt in wanted]
    print()
    print("| trainable | grad ckpt | trainable params | peak memory (GiB) | step (s) | note |")
    print("|---|---|---|---|---|---|")
    for label, counts, peak, step, note in rows:
        trainable, ckpt = label.split()
        peak_s = f"{peak / GIB:.2f}" if peak is not None else "-"
        step_s = f"{step:.1f}" if step is not None else "-"
        print(f"| {trainable} | {ckpt} | {counts.trainable / 1e6:.1f} M | {peak_s} | {step_s} | {note} |")


if __name__ == "__main__":
    main()
