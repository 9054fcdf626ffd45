"""Sampler convergence: how far each sampler's result is from a many-step DDIM (eta 0) reference, by step count.

For every model, the held-out clips of the recipe's generated data set (2 per motion: 18 inputs, first frame +
caption, the model's default frame stride) are animated in one batch from fixed noise z_T (seed 0) with the model's
released guidance settings and timestep spacing; every sampler runs at eta 0 through the pipeline
(``sampler=...``). Printed per model: the mean over the inputs of the RMS distance to the reference of the final
latents and of the decoded frames (grey levels, 0-255), for each step count, and the fewest steps of the grid at
which each sampler is as close as 50-step DDIM. Two rows frame the numbers: the reference against itself from
another noise (what an unrelated sample scores) and 50-step DDIM.

    python benchmarks/sampler_convergence.py                                  # the shipped small model (v, zero SNR)
    python benchmarks/sampler_convergence.py --model shipped --model runs/eps-sampler-test/model.safetensors
    python benchmarks/sampler_convergence.py --quick                          # seconds: a random tiny model (tests)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dynamicrafter.diffusion.samplers import SAMPLERS
from dynamicrafter.pipeline import DynamiCrafterPipeline

STEPS = (5, 8, 10, 15, 20, 25, 50)
BASELINE_STEPS = 50  # the released step count: the distance every sampler has to match
REFERENCE_STEPS = 250
QUICK_STEPS = (2, 4)
QUICK_REFERENCE_STEPS = 8
SEED = 0
EPS_TRAIN_STEPS = 1000


@dataclass
class Inputs:
    images: list[Image.Image]
    prompts: list[str]


@dataclass
class Result:
    """Mean RMS distances to the reference, per sampler and step count: latents and frames (grey levels)."""

    model: str
    num_inputs: int
    steps: tuple[int, ...]
    reference_steps: int
    latent: dict[str, dict[int, float]] = field(default_factory=dict)
    frames: dict[str, dict[int, float]] = field(default_factory=dict)
    control: tuple[float, float] = (0.0, 0.0)  # DDIM at the baseline steps from another noise
    seconds: float = 0.0

    def steps_to_match(self, sampler: str, baseline: float, what: str = "latent") -> int | None:
        """The fewest steps of the grid at which ``sampler`` is at least as close as ``baseline``."""
        table = getattr(self, what)[sampler]
        return next((s for s in self.steps if table[s] <= baseline), None)


def held_out_inputs(per_motion: int) -> Inputs:
    """First frames and captions of the recipe's held-out clips (``per_motion`` clips of each motion)."""
    from dynamicrafter.recipe.report import held_out_clips
    from dynamicrafter.recipe.tiny import RECIPE_DATA

    clips = held_out_clips(RECIPE_DATA, per_motion)
    return Inputs([Image.fromarray(c.frames[0]) for c in clips], [c.scene.caption for c in clips])


def random_inputs(count: int, size: int) -> Inputs:
    rng = np.random.default_rng(SEED)
    images = [Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)) for _ in range(count)]
    return Inputs(images, [f"a shape moving {('left', 'right', 'up', 'down')[i % 4]}" for i in range(count)])


def generate(pipe: DynamiCrafterPipeline, inputs: Inputs, sampler: str, steps: int, noise: torch.Tensor
             ) -> torch.Tensor:
    """Final latents from ``noise`` (fixed VDG posterior draw: the same generator seed every call)."""
    out = pipe(inputs.images, inputs.prompts, sampler=sampler, num_inference_steps=steps,
               eta=0.0, latents=noise, generator=torch.Generator().manual_seed(SEED), output_type="latent")
    return out.latents


def rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-input RMS distance (b,)."""
    return (a - b).pow(2).flatten(1).mean(1).sqrt()


def grey(latents: torch.Tensor, pipe: DynamiCrafterPipeline) -> torch.Tensor:
    return (pipe.decode(latents).clamp(-1, 1) + 1.0) * 127.5


def measure(pipe: DynamiCrafterPipeline, name: str, inputs: Inputs, samplers: list[str], steps: tuple[int, ...],
            reference_steps: int, baseline_steps: int) -> Result:
    """Distances to ``reference_steps``-step DDIM; the control is ``baseline_steps``-step DDIM from other noise."""
    t0 = time.perf_counter()
    shape = pipe.prepare_latents(len(inputs.images), pipe.resolve_options(None), None).shape
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(SEED))
    other = torch.randn(shape, generator=torch.Generator().manual_seed(SEED + 1))
    ref = generate(pipe, inputs, "ddim", reference_steps, noise)
    ref_frames = grey(ref, pipe)
    control = generate(pipe, inputs, "ddim", baseline_steps, other)
    result = Result(name, len(inputs.images), steps, reference_steps,
                    control=(rms(control, ref).mean().item(), rms(grey(control, pipe), ref_frames).mean().item()))
    for sampler in samplers:
        result.latent[sampler], result.frames[sampler] = {}, {}
        for s in steps:
            z = generate(pipe, inputs, sampler, s, noise)
            result.latent[sampler][s] = rms(z, ref).mean().item()
            result.frames[sampler][s] = rms(grey(z, pipe), ref_frames).mean().item()
            print(f"  {name}: {sampler} {s} steps: latents {result.latent[sampler][s]:.4f}", file=sys.stderr)
    result.seconds = time.perf_counter() - t0
    return result


def table(result: Result, what: str, baseline_steps: int) -> str:
    """One markdown table: a row per sampler, a column per step count, the steps to match DDIM at baseline_steps."""
    values = getattr(result, what)
    control = result.control[0 if what == "latent" else 1]
    baseline = values["ddim"].get(baseline_steps)
    head = f"| sampler | {' | '.join(str(s) for s in result.steps)} | steps to match {baseline_steps}-step DDIM |"
    lines = [head, "|" + "---|" * (len(result.steps) + 2)]
    for sampler, row in values.items():
        match = result.steps_to_match(sampler, baseline, what) if baseline is not None else None
        cells = " | ".join(f"{row[s]:.4f}" if what == "latent" else f"{row[s]:.2f}" for s in result.steps)
        lines.append(f"| {sampler} | {cells} | {match if match is not None else '-'} |")
    unit = "RMS, latents" if what == "latent" else "RMS, decoded frames in grey levels 0-255"
    fmt = ".4f" if what == "latent" else ".2f"
    lines.append(f"\nMean distance to {result.reference_steps}-step DDIM ({unit}); {baseline_steps}-step DDIM from "
                 f"another noise (an unrelated sample): {control:{fmt}}.")
    return "\n".join(lines)


def load(model: str) -> DynamiCrafterPipeline:
    pipe = DynamiCrafterPipeline.from_checkpoint(None if model == "shipped" else model, device="cpu",
                                                 dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def quick_pipeline() -> DynamiCrafterPipeline:
    """A random tiny v-prediction model on a zero-SNR schedule with dynamic rescale and trailing spacing."""
    from dynamicrafter.config import tiny_config
    from dynamicrafter.testing import random_model

    config = tiny_config(parameterization="v", height=32, width=32, num_frames=2)
    config = replace(config, defaults=replace(config.defaults, timestep_spacing="uniform_trailing",
                                              guidance_rescale=0.7))
    pipe = DynamiCrafterPipeline(random_model(config, SEED), device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prepare_eps_model(out: Path) -> str:
    """The start of this benchmark's small eps-prediction model: the shipped model's weights on the 256 model's
    schedule (eps-prediction, scaled-linear betas without zero terminal SNR or dynamic rescale, uniform spacing, no
    guidance rescale) and the VAE latents of the recipe's training clips. Returns the training command (the
    recipe's training code: ``dynamicrafter train``, stage finetune, whole U-Net, the recipe's settings)."""
    from dynamicrafter.checkpoint import save_checkpoint
    from dynamicrafter.config import ScheduleConfig
    from dynamicrafter.data.latents import encode_latent_cache
    from dynamicrafter.model import DynamiCrafter
    from dynamicrafter.recipe.tiny import RECIPE_DATA

    shipped = DynamiCrafterPipeline.from_checkpoint(device="cpu", dtype=torch.float32).model
    config = replace(shipped.config, name="tiny_eps", schedule=ScheduleConfig(parameterization="eps"),
                     defaults=replace(shipped.config.defaults, timestep_spacing="uniform", guidance_rescale=0.0))
    model = DynamiCrafter(config)
    model.load_state_dict(shipped.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out / "init.safetensors")
    encode_latent_cache(model.vae, RECIPE_DATA, "train", out / "latents")
    return (f"dynamicrafter train --stage finetune --trainable full --init {out / 'init.safetensors'} "
            f"--data latents:{out / 'latents'} --run-dir {out / 'run'} --batch-size 16 --lr 5e-4 --warmup-steps 100 "
            f"--ema-decay 0.99 --gradient-clip 1.0 --accumulate-grad-batches 1 --no-rand-cond-frame "
            f"--interp-fraction 0.5 --uncond-prob 0.05 --num-workers 0 --sample-every 0 --checkpoint-every 250 "
            f"--log-every 25 --seed 0 --logger csv --max-steps {EPS_TRAIN_STEPS}")


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="'shipped' (default) or a checkpoint; repeatable")
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated (default: all)")
    parser.add_argument("--steps", default=",".join(map(str, STEPS)), help="comma-separated step counts")
    parser.add_argument("--reference-steps", type=int, default=REFERENCE_STEPS)
    parser.add_argument("--per-motion", type=int, default=2, help="held-out clips per motion (9 motions)")
    parser.add_argument("--quick", action="store_true", help="a random tiny model, 4 random inputs, few steps")
    parser.add_argument("--prepare-eps-model", metavar="DIR", type=Path,
                        help="write the eps model's starting checkpoint and training latents to DIR, print the "
                             "training command, and exit")
    args = parser.parse_args(argv)
    if args.prepare_eps_model is not None:
        print(prepare_eps_model(args.prepare_eps_model))
        return []
    torch.manual_seed(SEED)
    torch.set_flush_denormal(True)
    samplers = [s for s in args.samplers.split(",") if s]
    steps = tuple(int(s) for s in args.steps.split(","))
    if args.quick:
        steps, reference_steps = QUICK_STEPS, QUICK_REFERENCE_STEPS
        runs = [("random tiny (quick)", quick_pipeline, random_inputs(2, 32))]
    else:
        reference_steps = args.reference_steps
        inputs = held_out_inputs(args.per_motion)
        runs = [(m, lambda m=m: load(m), inputs) for m in args.model or ["shipped"]]
    baseline_steps = BASELINE_STEPS if BASELINE_STEPS in steps else max(steps)
    results = []
    for name, make, inputs in runs:
        pipe = make()
        c = pipe.config
        result = measure(pipe, name, inputs, samplers, steps, reference_steps, baseline_steps)
        print(f"\n### {name}: {c.schedule.parameterization}-prediction, "
              f"{'zero terminal SNR' if c.schedule.rescale_betas_zero_snr else 'no zero SNR'}"
              f"{', dynamic rescale' if c.schedule.use_dynamic_rescale else ''}, "
              f"{c.defaults.timestep_spacing} spacing, guidance {c.defaults.guidance_scale:g} "
              f"(rescale {c.defaults.guidance_rescale:g}); {result.num_inputs} inputs; {result.seconds:.0f} s\n")
        print(table(result, "latent", baseline_steps) + "\n")
        print(table(result, "frames", baseline_steps))
        results.append(result)
    return results


if __name__ == "__main__":
    main()
