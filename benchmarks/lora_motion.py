"""Does a LoRA adapter trained on clips of one motion move the shipped small model's generations toward it?

1. Data: "zoom in" clips of the recipe's generated data set (same scene generator and settings, train split, only
   the zoom-in motion), written as a user's folder of videos with captions (mp4 + index.csv, 46 frames at stride 1, so
   that training samples 16 frames 1-3 apart as the recipe's clips are).
2. Training: ``dynamicrafter train --stage finetune --init <shipped model> --lora RANK --lora-targets all`` (the
   conditioning frame is the first one, as in the recipe).
3. Held-out evaluation (the recipe's ``test`` split, strides 2-3, never seen in training), base model vs base +
   adapter with the same seeds: (a) zoom-in clips with their own captions; (b) clips of every other motion with their
   own captions (side effects); (c) the same first frames as (b) with a zoom-in caption.
4. Measures: the recipe's optical-flow motion classifier (:mod:`dynamicrafter.recipe.motion_eval`; issue 17 found it
   unreliable on degraded clips), its fitted zoom (summed relative growth per frame, a continuous flow measure), and
   the object's scale change read against the known rendering: pixels that differ from the scene's known background
   (and distractors) are the object; ``0.5 * slope of log(area)`` over the clip is its log-radius change. Each measure
   is validated first on ground-truth clips, the same clips degraded as generated ones are (blur, the model's own
   autoencoder, noise, colour drift) and controls (other motions): the AUC of zoom-in against the rest.

    python benchmarks/lora_motion.py --out runs/lora_zoom     # ~30 min on a 2-core CPU (training resumes)

Prints the tables and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from dynamicrafter.data import synthetic as syn
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.recipe.motion_eval import estimate_motion
from dynamicrafter.recipe.report import EvalSettings, held_out_clips
from dynamicrafter.recipe.tiny import RECIPE_DATA

MOTION = "zoom_in"
SOURCE_FRAMES = 46  # 15 * 3 + 1: a 16-frame sample at stride 3 fits
OBJECT_THRESHOLD = 60  # grey levels (largest channel difference) from the known background that count as object
MIN_AREA = 3  # pixels; frames with a smaller object are left out of the fit


# ----------------------------------------------------------------------------------------------------------------
# Measures
# ----------------------------------------------------------------------------------------------------------------


def scale_change(frames: np.ndarray, background: np.ndarray) -> float:
    """Log-radius change of the object over the clip from the known background: frames (t, h, w, 3) uint8."""
    diff = np.abs(frames.astype(np.int16) - background[None].astype(np.int16)).max(axis=-1)  # (t, h, w)
    area = (diff > OBJECT_THRESHOLD).sum(axis=(1, 2)).astype(np.float64)
    keep = area >= MIN_AREA
    if keep.sum() < 2:
        return float("nan")
    t = np.arange(len(frames))[keep]
    slope = np.polyfit(t, 0.5 * np.log(area[keep]), 1)[0]
    return float(slope * (len(frames) - 1))


def measures(frames: np.ndarray, scene: syn.Scene) -> dict[str, float]:
    estimate = estimate_motion(frames)
    background = syn.render_background(scene, RECIPE_DATA)
    return {"classifier_zoom_in": float(estimate.label == MOTION), "flow_zoom": float(estimate.zoom),
            "scale_change": scale_change(frames, background)}


def auc(positive: list[float], negative: list[float]) -> float:
    """P(a zoom-in clip scores above another clip); ties count half (NaN scores count as lowest)."""
    pos = np.nan_to_num(np.asarray(positive), nan=-np.inf)
    neg = np.nan_to_num(np.asarray(negative), nan=-np.inf)
    greater = (pos[:, None] > neg[None]).mean()
    return float(greater + 0.5 * (pos[:, None] == neg[None]).mean())


# ----------------------------------------------------------------------------------------------------------------
# Validation of the measures (ground truth, degraded, controls)
# ----------------------------------------------------------------------------------------------------------------


def degradations(pipe: DynamiCrafterPipeline) -> dict[str, object]:
    def autoencoder(frames: np.ndarray) -> np.ndarray:
        video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # (1, 3, t, h, w)
        with torch.no_grad():
            z = pipe.encode_video(video, sample=False)
            out = pipe.decode_latents(z)[0].permute(1, 2, 3, 0)  # (t, h, w, 3)
        return ((out.numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)

    def blur(frames: np.ndarray) -> np.ndarray:
        return np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in frames])

    def noise(frames: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(0)
        return (frames + rng.normal(0, 8, frames.shape)).clip(0, 255).astype(np.uint8)

    def drift(frames: np.ndarray) -> np.ndarray:  # colour drifting frame to frame (+-20 grey levels)
        ramp = np.linspace(-20, 20, len(frames))[:, None, None, None] * np.array([1.0, -0.5, 0.3])
        return (frames + ramp).clip(0, 255).astype(np.uint8)

    return {"clean": lambda f: f, "blur 1.5 px": blur, "autoencoder": autoencoder,
            "autoencoder + blur": lambda f: blur(autoencoder(f)), "noise 8": noise, "colour drift": drift}


def validate(pipe: DynamiCrafterPipeline, clips: list[syn.SyntheticClip]) -> list[dict]:
    rows = []
    for name, fn in degradations(pipe).items():
        scored = [(c.scene.motion, measures(fn(c.frames), c.scene)) for c in clips]
        row = {"condition": name}
        for key in ("classifier_zoom_in", "flow_zoom", "scale_change"):
            pos = [m[key] for motion, m in scored if motion == MOTION]
            neg = [m[key] for motion, m in scored if motion != MOTION]
            row[key] = {"auc": auc(pos, neg), "zoom_in_mean": float(np.nanmean(pos)),
                        "others_mean": float(np.nanmean(neg)), "nan": int(np.isnan(pos + neg).sum())}
        rows.append(row)
    truth = [c.scene.rate * (RECIPE_DATA.frames - 1) for c in clips if c.scene.motion == MOTION]
    measured = [measures(c.frames, c.scene)["scale_change"] for c in clips if c.scene.motion == MOTION]
    rows.append({"condition": "true log-radius change (zoom in)", "truth_mean": float(np.mean(truth)),
                 "measured_mean": float(np.nanmean(measured)),
                 "correlation": float(np.corrcoef(truth, measured)[0, 1])})
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Data, training, generation
# ----------------------------------------------------------------------------------------------------------------


def write_data(out: Path, num_clips: int) -> Path:
    config = replace(RECIPE_DATA, num_clips=num_clips, frames=SOURCE_FRAMES, frame_strides=(1,), motions=(MOTION,))
    return syn.write_video_split(config, out, "train")


def train(data: Path, run: Path, args: argparse.Namespace) -> Path:
    from dynamicrafter.cli import main
    from dynamicrafter.weights import default_checkpoint

    if (run / "lora.safetensors").is_file():
        return run / "lora.safetensors"
    common = ["--run-dir", str(run), "--logger", "csv"]
    resume = ["--resume"] if (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()) else []
    argv = ["train", *common, *resume] if resume else [
        "train", "--stage", "finetune", "--init", str(default_checkpoint()), "--data", str(data), "--lora",
        str(args.rank), "--lora-targets", args.targets, "--max-steps", str(args.steps), "--batch-size",
        str(args.batch), "--accumulate-grad-batches", "1", "--lr", str(args.lr), "--frame-stride", "3",
        "--no-rand-cond-frame", "--num-workers", "0", "--sample-every", "0", "--checkpoint-every", "50",
        "--gradient-clip", "1.0", "--seed", "0", *common]
    if main(argv) != 0:
        raise SystemExit("training failed")
    return run / "lora.safetensors"


def zoom_caption(scene: syn.Scene, index: int) -> str:
    rng = np.random.default_rng([7, index])
    return syn.compose_caption(rng, MOTION, scene.main, scene.background, motion_only=False)


def generate(pipe: DynamiCrafterPipeline, clip: syn.SyntheticClip, caption: str, settings: EvalSettings) -> np.ndarray:
    generator = torch.Generator().manual_seed(settings.seed + clip.scene.clip_id)
    out = pipe(clip.frames[0], caption, num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
               frame_stride=clip.scene.frame_stride, generator=generator, output_type="np")
    return (out.frames[0] * 255).astype(np.uint8)


def evaluate(pipe: DynamiCrafterPipeline, groups: dict[str, list[tuple[syn.SyntheticClip, str]]],
             settings: EvalSettings) -> dict[str, list[dict[str, float]]]:
    from tqdm.auto import tqdm

    out: dict[str, list[dict[str, float]]] = {}
    for name, cases in groups.items():
        out[name] = [measures(generate(pipe, clip, caption, settings), clip.scene)
                     for clip, caption in tqdm(cases, desc=name, unit="video")]
    return out


def paired(before: list[dict], after: list[dict], key: str) -> dict[str, float]:
    b = np.array([m[key] for m in before])
    a = np.array([m[key] for m in after])
    ok = ~(np.isnan(a) | np.isnan(b))
    d = a[ok] - b[ok]
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"before": float(np.nanmean(b)), "after": float(np.nanmean(a)), "diff": float(d.mean()),
            "ci95": float(half), "n": int(ok.sum()), "increased": int((d > 0).sum())}


def sizes(pipe: DynamiCrafterPipeline, adapter: Path) -> dict[str, float]:
    from dynamicrafter.lora import read_adapter

    lora_params = sum(t.numel() for t in read_adapter(adapter).tensors.values())
    total = sum(p.numel() for p in pipe.model.parameters())
    unet = sum(p.numel() for p in pipe.model.unet.parameters())
    return {"adapter_bytes": adapter.stat().st_size, "adapter_parameters": lora_params, "model_parameters": total,
            "fraction_of_model": lora_params / total, "fraction_of_unet": lora_params / unet}


def unload_is_exact(pipe: DynamiCrafterPipeline, adapter: Path, clip: syn.SyntheticClip,
                    settings: EvalSettings) -> bool:
    before = generate(pipe, clip, clip.scene.caption, settings)
    pipe.load_lora(adapter)
    changed = not np.array_equal(generate(pipe, clip, clip.scene.caption, settings), before)
    pipe.unload_lora()
    return changed and np.array_equal(generate(pipe, clip, clip.scene.caption, settings), before)


def print_tables(results: dict) -> None:
    print("\nValidation of the measures (AUC of zoom-in vs the other 8 motions; ground-truth held-out clips):")
    print("| condition | classifier (acc. as AUC) | flow zoom | scale from rendering |")
    print("|---|---|---|---|")
    for row in results["validation"][:-1]:
        print(f"| {row['condition']} | " + " | ".join(f"{row[k]['auc']:.3f}" for k in
                                                      ("classifier_zoom_in", "flow_zoom", "scale_change")) + " |")
    print(f"true vs measured log-radius change: {results['validation'][-1]}")
    print("\nGenerated videos, base -> base + LoRA (paired by clip and seed; diff +- 95% CI, clips increased / n):")
    print("| cases | classifier: zoom_in rate | flow zoom | scale change (log radius) |")
    print("|---|---|---|---|")
    for name, row in results["effect"].items():
        cells = [f"{r['before']:.3f} -> {r['after']:.3f} ({r['diff']:+.3f} +- {r['ci95']:.3f}, "
                 f"{r['increased']}/{r['n']})" for r in (row[k] for k in ("classifier_zoom_in", "flow_zoom",
                                                                           "scale_change"))]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nadapter: {results['sizes']}; load -> unload bit-identical: {results['unload_exact']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/lora_zoom"))
    parser.add_argument("--train-clips", type=int, default=400)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="all")
    parser.add_argument("--per-motion", type=int, default=24, help="held-out zoom-in clips")
    parser.add_argument("--per-other-motion", type=int, default=3, help="held-out clips of each other motion")
    parser.add_argument("--validation-per-motion", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: small tensors, and no OpenMP stalls on a shared CPU)")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = write_data(args.out / "data", args.train_clips).parent
    adapter = train(data, args.out / "run", args)
    trained = time.perf_counter() - t0
    pipe = DynamiCrafterPipeline.from_checkpoint(device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    settings = EvalSettings()
    pool = held_out_clips(RECIPE_DATA, args.per_motion)
    zoom = [c for c in pool if c.scene.motion == MOTION]
    others = [c for c in pool if c.scene.motion != MOTION]
    others = [c for m in RECIPE_DATA.motions if m != MOTION
              for c in [o for o in others if o.scene.motion == m][: args.per_other_motion]]
    groups = {"zoom-in clips, own captions": [(c, c.scene.caption) for c in zoom],
              "other motions, own captions": [(c, c.scene.caption) for c in others],
              "other motions' first frames, zoom-in caption": [(c, zoom_caption(c.scene, i))
                                                                for i, c in enumerate(others)]}
    validation_clips = [c for m in RECIPE_DATA.motions for c in [x for x in pool if x.scene.motion == m]
                        [: args.validation_per_motion]]
    results = {"settings": vars(args) | {"out": str(args.out)}, "train_seconds": trained,
               "validation": validate(pipe, validation_clips)}
    before = evaluate(pipe, groups, settings)
    pipe.load_lora(adapter)
    after = evaluate(pipe, groups, settings)
    pipe.unload_lora()
    results["effect"] = {name: {k: paired(before[name], after[name], k) for k in before[name][0]} for name in groups}
    results["sizes"] = sizes(pipe, adapter)
    results["unload_exact"] = unload_is_exact(pipe, adapter, zoom[0], settings)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print_tables(results)


if __name__ == "__main__":
    main()
