"""Sampler convergence: how far each sampler's result is from a many-step DDIM (eta 0) reference, by step count.

For every model, the held-out clips of the recipe's generated data set (2 per motion: 18 inputs, first frame +
caption, the model's default frame stride) are animated in one batch from fixed noise z_T (seed 0), with the
model's released guidance settings and timestep spacing (``--spacing`` overrides it); every sampler runs through
the pipeline (``sampler=...``, eta 0). Printed per model: the mean over the inputs of the RMS distance of the final
latents, and of the decoded frames (grey levels 0-255), to 250-step DDIM, for 5, 8, 10, 15, 20, 25 and 50 steps, and
the fewest of these steps at which each sampler is as close as 50-step DDIM. For scale, 50-step DDIM from another
noise (an unrelated sample) is printed too.

    python benchmarks/sampler_convergence.py                                  # the shipped small model (v, zero SNR)
    python benchmarks/sampler_convergence.py --model runs/eps-sampler-test/run/model.safetensors
    python benchmarks/sampler_convergence.py --prepare-eps-model runs/eps-sampler-test   # the eps model's start
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
EPS_TRAIN_STEPS = 500


@dataclass
class Inputs:
    images: list[Image.Image]
    prompts: list[str]


# The references: DDIM at the reference steps, and its Richardson extrapolation 1.25 DDIM_250 - 0.25 DDIM_50. DDIM is
# first order (its error ~ c / steps, also for the end scale s of its smallest timestep), so DDIM_250 is itself off
# by about a fifth of DDIM_50's error, in the direction DDIM's errors take: the distances to it favour DDIM and
# floor the higher-order samplers; the extrapolation cancels that first-order term.
REFERENCES = ("ddim", "extrapolated")
MEASURES = ("latent", "frames")


@dataclass
class Result:
    """Mean RMS distances per (reference, measure) -> sampler -> steps; measures: latents, frames (grey levels)."""

    model: str
    num_inputs: int
    steps: tuple[int, ...]
    reference_steps: int
    baseline_steps: int
    distances: dict[tuple[str, str], dict[str, dict[int, float]]] = field(default_factory=dict)
    control: dict[tuple[str, str], float] = field(default_factory=dict)  # baseline DDIM from another noise
    seconds: float = 0.0

    def steps_to_match(self, reference: str, what: str, sampler: str) -> int | None:
        """The fewest steps of the grid at which ``sampler`` is at least as close as DDIM at the baseline steps."""
        table = self.distances[reference, what]
        baseline = table["ddim"][self.baseline_steps]
        return next((s for s in self.steps if table[sampler][s] <= baseline), None)


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


def generate(pipe: DynamiCrafterPipeline, inputs: Inputs, sampler: str, steps: int, noise: torch.Tensor,
             spacing: str | None = None) -> torch.Tensor:
    """Final latents from ``noise`` (fixed VDG posterior draw: the same generator seed every call)."""
    out = pipe(inputs.images, inputs.prompts, sampler=sampler, num_inference_steps=steps, timestep_spacing=spacing,
               eta=0.0, latents=noise, generator=torch.Generator().manual_seed(SEED), output_type="latent")
    return out.latents


def rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-input RMS distance (b,)."""
    return (a - b).pow(2).flatten(1).mean(1).sqrt()


def grey(latents: torch.Tensor, pipe: DynamiCrafterPipeline) -> torch.Tensor:
    return (pipe.decode(latents).clamp(-1, 1) + 1.0) * 127.5


def measure(pipe: DynamiCrafterPipeline, name: str, inputs: Inputs, samplers: list[str], steps: tuple[int, ...],
            reference_steps: int, baseline_steps: int, spacing: str | None = None) -> tuple[Result, dict]:
    """Every sampler at every step count from one noise, the references (:data:`REFERENCES`) and the control
    (``baseline_steps``-step DDIM from another noise); returns the distances and the final latents."""
    t0 = time.perf_counter()
    shape = pipe.prepare_latents(len(inputs.images), pipe.resolve_options(None), None).shape
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(SEED))
    other = torch.randn(shape, generator=torch.Generator().manual_seed(SEED + 1))
    latents = {("ddim", reference_steps): generate(pipe, inputs, "ddim", reference_steps, noise, spacing)}
    for sampler in samplers:
        for s in steps:
            latents[sampler, s] = generate(pipe, inputs, sampler, s, noise, spacing)
            print(f"  {name}: {sampler} {s} steps", file=sys.stderr)
    control = generate(pipe, inputs, "ddim", baseline_steps, other, spacing)
    ref = latents["ddim", reference_steps]
    base = latents["ddim", baseline_steps]
    references = {"ddim": ref, "extrapolated": ref + (ref - base) * baseline_steps / (reference_steps - baseline_steps)}
    decoded = {key: grey(z, pipe) for key, z in [*latents.items(), (("control", 0), control),
                                                  *((("ref", k), z) for k, z in references.items())]}
    result = Result(name, len(inputs.images), steps, reference_steps, baseline_steps)
    for reference, z_ref in references.items():
        for what in MEASURES:
            target = z_ref if what == "latent" else decoded["ref", reference]

            def distance(key, z):
                return rms(z if what == "latent" else decoded[key], target).mean().item()  # noqa: B023

            result.distances[reference, what] = {
                sampler: {s: distance((sampler, s), latents[sampler, s]) for s in steps} for sampler in samplers}
            result.control[reference, what] = distance(("control", 0), control)
    result.seconds = time.perf_counter() - t0
    return result, {"references": references, "runs": latents, "control": control}


def table(result: Result, reference: str, what: str) -> str:
    """One markdown table: a row per sampler, a column per step count, the steps to match baseline DDIM."""
    values = result.distances[reference, what]
    b = result.baseline_steps
    head = f"| sampler | {' | '.join(str(s) for s in result.steps)} | steps to match {b}-step DDIM |"
    lines = [head, "|" + "---|" * (len(result.steps) + 2)]
    fmt = ".4f" if what == "latent" else ".2f"
    for sampler, row in values.items():
        match = result.steps_to_match(reference, what, sampler)
        cells = " | ".join(f"{row[s]:{fmt}}" for s in result.steps)
        lines.append(f"| {sampler} | {cells} | {match if match is not None else '-'} |")
    unit = "latents" if what == "latent" else "decoded frames, grey levels 0-255"
    r = result.reference_steps
    target = (f"{r}-step DDIM (eta 0)" if reference == "ddim" else
              f"the extrapolated reference DDIM_{r} + (DDIM_{r} - DDIM_{b}) {b} / {r - b} (DDIM's first-order error "
              f"cancelled)")
    lines.append(f"\nMean RMS distance ({unit}) to {target}; {b}-step DDIM from another noise (an unrelated sample): "
                 f"{result.control[reference, what]:{fmt}}.")
    return "\n".join(lines)


def load(model: str) -> DynamiCrafterPipeline:
    pipe = DynamiCrafterPipeline.from_checkpoint(None if model == "shipped" else model, device="cpu",
                                                 dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def quick_pipeline() -> DynamiCrafterPipeline:
    """A random tiny v-prediction model on a zero-SNR schedule with dynamic rescale and trailing spacing."""
    from dynamicrafter.config import config_for_tests
    from dynamicrafter.testing import random_model

    config = config_for_tests(parameterization="v", height=32, width=32, num_frames=2)
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
    parser.add_argument("--spacing", choices=("uniform", "uniform_trailing"), help="default: each model's own")
    parser.add_argument("--per-motion", type=int, default=2, help="held-out clips per motion (9 motions)")
    parser.add_argument("--save-latents", metavar="DIR", type=Path, help="save every final latent tensor there")
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
        if "ddim" not in samplers:
            samplers.insert(0, "ddim")  # the baseline and the extrapolated reference
        result, latents = measure(pipe, name, inputs, samplers, steps, reference_steps, baseline_steps, args.spacing)
        if args.save_latents is not None:
            args.save_latents.mkdir(parents=True, exist_ok=True)
            torch.save(latents, args.save_latents / f"{Path(name).stem}.pt")
        print(f"\n### {name}: {c.schedule.parameterization}-prediction, "
              f"{'zero terminal SNR' if c.schedule.rescale_betas_zero_snr else 'no zero SNR'}"
              f"{', dynamic rescale' if c.schedule.use_dynamic_rescale else ''}, "
              f"{args.spacing or c.defaults.timestep_spacing} spacing, guidance {c.defaults.guidance_scale:g} "
              f"(rescale {c.defaults.guidance_rescale:g}); {result.num_inputs} inputs; {result.seconds:.0f} s\n")
        print("\n\n".join(table(result, reference, what) for reference in REFERENCES for what in MEASURES))
        results.append(result)
    return results


if __name__ == "__main__":
    main()
