"""Can the base text-to-video U-Net learn motion at all? The overfit test of issue 17 (step 2).

``python -m dynamicrafter.recipe.overfit --out DIR [--clips 54] [--steps 1500]`` trains the base
text-to-video model (the recipe's U-Net widths, whole U-Net, text only: training stage ``t2v``) on the first
``--clips`` training clips of the centred 64 x 64 data (:data:`.tiny.CENTRED_DATA`), then samples every one of those
captions and reads the motion each video shows with the tracker (:mod:`.tracker`, validated on this layout in
``reports/tiny/evaluator/VALIDATION_CENTRED.md``). A base that cannot reproduce the motion of the captions it was
trained on cannot give the image-to-video stages a motion prior.

The autoencoder and the CLIP text tower are the shipped small model's (trained on the 32 x 32 frames; its
reconstructions of the centred 64 x 64 clips are read right by the tracker in 54 of 54 clips), the U-Net is new.
Two controls are scored the same way: the autoencoder's reconstructions of the training clips (the ceiling) and the
untrained U-Net (must not pass). Everything is resumable: the latent cache, the training run (checkpoints every 250
steps) and the generated videos (``DIR/videos/<sampling setting>/*.npy``; the report ``DIR/OVERFIT_<setting>.md``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dynamicrafter.checkpoint import load_model, save_checkpoint
from dynamicrafter.data import synthetic as syn
from dynamicrafter.data.latents import encode_latent_cache
from dynamicrafter.media import atomic_path
from dynamicrafter.model import DynamiCrafter
from dynamicrafter.recipe import tracker as T
from dynamicrafter.recipe.config import base_t2v_config
from dynamicrafter.recipe.report import EvalSettings, generate
from dynamicrafter.recipe.tiny import CENTRED_DATA, SEED
from dynamicrafter.weights import default_checkpoint


@dataclass(frozen=True)
class OverfitPlan:
    out: Path
    clips: int = 54  # training clips (every motion at least 3 times in the first 54 of the centred data)
    steps: int = 1500
    batch: int = 8
    lr: float = 1e-3  # the recipe's t2v learning rate
    sample_steps: int = 25
    guidance_scale: float = 7.5
    init: Path | None = None  # the model whose autoencoder and text tower are reused (default: the shipped one)
    control_clips: int = 9  # clips sampled from the untrained U-Net (its noise videos are slow to track: the tracker
    # searches the whole frame for an object it cannot find)

    @property
    def data(self) -> syn.SyntheticConfig:
        return replace(CENTRED_DATA, num_clips=self.clips)

    @property
    def sampling_tag(self) -> str:
        """Names the video cache and the report of one sampling setting."""
        return f"steps{self.sample_steps}_cfg{self.guidance_scale:g}"


def base_model(plan: OverfitPlan) -> DynamiCrafter:
    """A fresh base U-Net (seeded) at the data's size, with the reused autoencoder and text / image towers."""
    source = load_model(plan.init if plan.init is not None else default_checkpoint())
    d = plan.data
    config = base_t2v_config(source.config)
    config = replace(config, unet=replace(config.unet, image_cross_attention=False),
                     defaults=replace(config.defaults, height=d.height, width=d.width, frame_stride=2,
                                      frame_stride_range=(min(d.frame_strides), max(d.frame_strides))))
    torch.manual_seed(SEED)
    model = DynamiCrafter(config)
    for name in ("vae", "text_encoder", "image_encoder"):
        getattr(model, name).load_state_dict(getattr(source, name).state_dict())
    return model


def prepare(plan: OverfitPlan) -> Path:
    """The fresh base model and the training clips' latent cache (both kept when they exist)."""
    plan.out.mkdir(parents=True, exist_ok=True)
    init = plan.out / "base_init.safetensors"
    if not init.is_file():
        save_checkpoint(base_model(plan), init)
    if not (plan.out / "latents" / "DONE").is_file():
        encode_latent_cache(load_model(init).vae, plan.data, "train", plan.out / "latents")
        (plan.out / "latents" / "DONE").write_text("ok\n")
    return init


def train_base(plan: OverfitPlan, init: Path) -> Path:
    """Training stage t2v on the cached clips (resumes an interrupted run); returns the exported (EMA) model."""
    from dynamicrafter.training.config import TrainConfig
    from dynamicrafter.training.trainer import train

    run_dir = plan.out / "t2v"
    export = run_dir / "model.safetensors"
    if export.is_file():
        return export
    checkpoints = run_dir / "checkpoints"
    resume = "latest" if checkpoints.is_dir() and any(checkpoints.iterdir()) else None
    train(TrainConfig(stage="t2v", data=f"latents:{plan.out / 'latents'}", init=str(init), run_dir=str(run_dir),
                      resume=resume, batch_size=plan.batch, num_workers=0, lr=plan.lr, warmup_steps=100,
                      max_steps=plan.steps, accumulate_grad_batches=1, gradient_clip_val=1.0, seed=SEED,
                      checkpoint_every=250, keep_checkpoints=1, sample_every=0, log_every=25, uncond_prob=0.05,
                      ema_decay=0.99), logger="csv")
    return export


def training_clips(plan: OverfitPlan) -> list[syn.SyntheticClip]:
    dataset = syn.SyntheticVideoDataset(plan.data, "train")
    return [dataset.clip(i) for i in range(len(dataset))]


def sample_videos(model_path: Path, clips: list[syn.SyntheticClip], settings: EvalSettings, cache: Path
                  ) -> list[np.ndarray]:
    """Each clip's caption sampled at the clip's frame stride (uint8 (t, h, w, 3)); cached per clip id."""
    cache.mkdir(parents=True, exist_ok=True)
    pipe = None
    videos = []
    for clip in tqdm(clips, desc=f"sampling {cache.name}", unit="video"):
        path = cache / f"{clip.scene.clip_id:08d}.npy"
        if not path.is_file():
            pipe = pipe or _pipe(model_path)  # loaded only when a video is missing
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, generate(pipe, clip, settings))
        videos.append(np.load(path))
    return videos


def score(clips: list[syn.SyntheticClip], videos: list[np.ndarray], data: syn.SyntheticConfig) -> list[dict]:
    """The tracker's reading of every video against its caption's motion, with the first frame's conformity."""
    rows = []
    for clip, video in zip(clips, videos):
        track = T.track_object(video, T.Appearance.from_scene(clip.scene, data))
        reading = T.read_motion(track)
        conf = T.conformity(video, clip.scene, data, track)
        rows.append({"clip_id": clip.scene.clip_id, "motion": clip.scene.motion, "label": reading.label,
                     "verdict": reading.verdict(clip.scene.motion), "first_iou": conf.first_iou,
                     "first_colour_error": conf.first_colour_error})
    return rows


def summary(rows: list[dict], motions: tuple[str, ...]) -> dict:
    """Share of videos whose tracked motion is the caption's, overall and per motion, and the labels seen."""
    def share(subset: list[dict]) -> float:
        return float(np.mean([r["verdict"] == "correct" for r in subset])) if subset else float("nan")

    return {"accuracy": share(rows), "n": len(rows),
            "per_motion": {m: share([r for r in rows if r["motion"] == m]) for m in motions},
            "labels": dict(Counter(r["label"] for r in rows)),
            "first_iou": float(np.nanmedian([r["first_iou"] for r in rows])),
            "first_colour_error": float(np.nanmedian([r["first_colour_error"] for r in rows]))}


def evaluate(plan: OverfitPlan, model: Path, init: Path) -> dict[str, dict]:
    """Trained base, untrained base (control) and the autoencoder's reconstructions (ceiling), scored alike."""
    from dynamicrafter.recipe.validate_tracker import autoencode

    clips, data = training_clips(plan), plan.data
    settings = EvalSettings(steps=plan.sample_steps, guidance_scale=plan.guidance_scale)
    pipe = _pipe(init)
    ceiling = autoencode(pipe, [c.frames for c in clips])
    control = clips[: plan.control_clips]
    videos = plan.out / "videos" / plan.sampling_tag  # one cache per sampling setting
    return {
        "autoencoder reconstructions (ceiling)": summary(score(clips, ceiling, data), data.motions),
        "untrained base (control)": summary(score(control, sample_videos(init, control, settings, videos / "untrained"),
                                                  data), data.motions),
        "trained base": summary(score(clips, sample_videos(model, clips, settings, videos / "trained"), data),
                                data.motions),
    }


def _pipe(path: Path):
    from dynamicrafter.pipeline import DynamiCrafterPipeline

    pipe = DynamiCrafterPipeline.from_checkpoint(path, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def markdown(plan: OverfitPlan, results: dict[str, dict], timings: dict[str, float]) -> str:
    motions = plan.data.motions
    counts = Counter(c.scene.motion for c in training_clips(plan))
    lines = ["# Overfit test of the base text-to-video model (centred 64 x 64 data)", "",
             f"{plan.clips} training clips (per motion: {', '.join(f'{m} {counts[m]}' for m in motions)}), "
             f"{plan.steps} steps at batch {plan.batch}, lr {plan.lr}; every training caption sampled once "
             f"({plan.sample_steps} steps, CFG {plan.guidance_scale}, the clip's frame stride) and read by the "
             f"tracker (the untrained control: the first {min(plan.control_clips, plan.clips)}). Share of videos "
             "showing the caption's motion:", "",
             "| videos | n | accuracy | " + " | ".join(motions) + " | median first-frame IoU | labels |",
             "|---|---|---|" + "---|" * len(motions) + "---|---|"]
    for name, s in results.items():
        per = " | ".join(f"{s['per_motion'][m]:.2f}" for m in motions)
        labels = ", ".join(f"{k} {v}" for k, v in sorted(s["labels"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {name} | {s['n']} | **{s['accuracy']:.2f}** | {per} | {s['first_iou']:.2f} | {labels} |")
    lines += ["", "Wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynamicrafter.recipe.overfit", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder (resumable)")
    parser.add_argument("--clips", type=int, default=OverfitPlan.clips)
    parser.add_argument("--steps", type=int, default=OverfitPlan.steps)
    parser.add_argument("--batch", type=int, default=OverfitPlan.batch)
    parser.add_argument("--sample-steps", type=int, default=OverfitPlan.sample_steps)
    parser.add_argument("--guidance-scale", type=float, default=OverfitPlan.guidance_scale)
    parser.add_argument("--control-clips", type=int, default=OverfitPlan.control_clips,
                        help="training captions sampled from the untrained U-Net (the control)")
    parser.add_argument("--init", type=Path, default=None, help="autoencoder + text tower source (default: shipped)")
    args = parser.parse_args(argv)
    plan = OverfitPlan(args.out, args.clips, args.steps, args.batch, sample_steps=args.sample_steps,
                       guidance_scale=args.guidance_scale, init=args.init, control_clips=args.control_clips)
    torch.set_flush_denormal(True)
    t0 = time.perf_counter()
    init = prepare(plan)
    t1 = time.perf_counter()
    model = train_base(plan, init)
    t2 = time.perf_counter()
    results = evaluate(plan, model, init)
    timings = {"prepare": t1 - t0, "train": t2 - t1, "evaluate": time.perf_counter() - t2}
    text = markdown(plan, results, timings)
    print(text)
    with atomic_path(plan.out / f"OVERFIT_{plan.sampling_tag}.md") as tmp:
        tmp.write_text(text)
    with atomic_path(plan.out / f"overfit_{plan.sampling_tag}.json") as tmp:
        tmp.write_text(json.dumps({"plan": {k: str(v) for k, v in asdict(plan).items()}, "results": results,
                                   "timings": timings}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
