"""Can the base text-to-video U-Net learn motion at all? The overfit test of issue 17 (step 2).

``python -m dynamicrafter.recipe.overfit --out DIR [--clips 54] [--steps 1500]`` trains the base
text-to-video model (the recipe's U-Net widths, whole U-Net, text only: training stage ``t2v``) on the first
``--clips`` training clips of the centred 64 x 64 data (:data:`.tiny.CENTRED_DATA`), then samples every one of those
captions and reads the motion each video shows with the tracker (:mod:`.tracker`, validated on this layout in
``reports/tiny/evaluator/VALIDATION_CENTRED.md``). A base that cannot reproduce the motion of the captions it was
trained on cannot give the image-to-video stages a motion prior.

The autoencoder and the CLIP text tower are the shipped small model's by default (``--init`` names another model),
the U-Net is new. The runs in reports/tiny/evaluator/OVERFIT.md used the earlier shipped model's, trained on the
32 x 32 frames (its reconstructions of the centred 64 x 64 clips are read right by the tracker in 54 of 54 clips;
``git show f553cdf:src/dynamicrafter/weights/dynamicrafter_tiny.safetensors`` restores it for ``--init``).
Two controls are scored the same way: the autoencoder's reconstructions of the training clips (the ceiling) and the
untrained U-Net (must not pass). ``--swapped-clips N`` adds the swapped-caption test: the first N training captions
with every motion's phrase instead of their own (does the base read the motion word apart from the scene?).

Everything is resumable: the latent cache, the training run (checkpoints every 250 steps; a larger ``--steps`` than
a finished run's continues it) and the generated videos (``DIR/videos/<sampling setting>/{untrained,trainedN,
swappedN}/*.npy``). Reports: ``DIR/OVERFIT_t2v<steps>_<setting>.md`` with its ``.json`` and a frames figure.
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
from dynamicrafter.utils import process_map
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
    eta: float | None = None  # DDIM eta (None: the model's default, 1.0)
    guidance_rescale: float | None = None  # CFG rescale (None: the model's default, 0.7)
    init: Path | None = None  # the model whose autoencoder and text tower are reused (default: the shipped one)
    swapped_clips: int = 0  # training clips given every motion's caption (the swapped-caption test; 0: skipped)
    control_clips: int = 9  # clips sampled from the untrained U-Net (its noise videos are slow to track: the tracker
    # searches the whole frame for an object it cannot find)

    @property
    def data(self) -> syn.SyntheticConfig:
        return replace(CENTRED_DATA, num_clips=self.clips)

    @property
    def sampling_tag(self) -> str:
        """Names the video cache of one sampling setting (and, with the training steps, its report)."""
        tag = f"steps{self.sample_steps}_cfg{self.guidance_scale:g}"
        tag += "" if self.eta is None else f"_eta{self.eta:g}"
        return tag + ("" if self.guidance_rescale is None else f"_rescale{self.guidance_rescale:g}")

    @property
    def settings(self) -> EvalSettings:
        return EvalSettings(steps=self.sample_steps, guidance_scale=self.guidance_scale, eta=self.eta,
                            guidance_rescale=self.guidance_rescale)


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
    if export.is_file() and trained_steps(plan) >= plan.steps:
        return export
    resume = "latest" if trained_steps(plan) > 0 else None  # an interrupted run, or a longer one than the last
    train(TrainConfig(stage="t2v", data=f"latents:{plan.out / 'latents'}", init=str(init), run_dir=str(run_dir),
                      resume=resume, batch_size=plan.batch, num_workers=0, lr=plan.lr, warmup_steps=100,
                      max_steps=plan.steps, accumulate_grad_batches=1, gradient_clip_val=1.0, seed=SEED,
                      checkpoint_every=250, keep_checkpoints=1, sample_every=0, log_every=25, uncond_prob=0.05,
                      ema_decay=0.99), logger="csv")
    return export


def trained_steps(plan: OverfitPlan) -> int:
    """Optimizer steps of the newest training checkpoint (0 before the first)."""
    from dynamicrafter.training.callbacks import list_checkpoints

    found = list_checkpoints(plan.out / "t2v" / "checkpoints")
    return found[-1][0] if found else 0


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
    """The tracker's reading of every video against its caption's motion, with the first frame's conformity (one
    process per CPU core)."""
    return process_map(_score_one, [(c.scene, v, data) for c, v in zip(clips, videos)], desc="tracking", unit="video")


def _score_one(scene: syn.Scene, video: np.ndarray, data: syn.SyntheticConfig) -> dict:
    reading, conf = T.motion_and_conformity(video, scene, data)
    return {"clip_id": scene.clip_id, "motion": scene.motion, "label": reading.label,
            "verdict": reading.verdict(scene.motion), "first_iou": conf.first_iou,
            "first_colour_error": conf.first_colour_error}


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
    settings = plan.settings
    pipe = _pipe(init)
    ceiling = autoencode(pipe, [c.frames for c in clips])
    control = clips[: plan.control_clips]
    videos = plan.out / "videos" / plan.sampling_tag  # one cache per sampling setting (and training length)
    results = {"autoencoder reconstructions (ceiling)": summary(score(clips, ceiling, data), data.motions)}
    if control:  # --control-clips 0 skips it (its noise videos are the slowest to track)
        untrained = sample_videos(init, control, settings, videos / "untrained")
        results["untrained base (control)"] = summary(score(control, untrained, data), data.motions)
    trained = sample_videos(model, clips, settings, videos / f"trained{trained_steps(plan)}")
    results["trained base"] = summary(score(clips, trained, data), data.motions)
    return results


def swapped_test(plan: OverfitPlan, model: Path):
    """The first ``plan.swapped_clips`` training captions with every motion's phrase: does the base follow the text?"""
    from dynamicrafter.recipe.rescore import swapped_caption_test

    clips = training_clips(plan)[: plan.swapped_clips]
    cache = plan.out / "videos" / plan.sampling_tag / f"swapped{trained_steps(plan)}"
    return swapped_caption_test(_pipe(model), clips, plan.data, plan.settings, cache)


def write_figure(plan: OverfitPlan, path: Path) -> Path:
    """Frames 0, 3, ..., 15 of the first training clip of each motion (one row) above the trained base's sample of
    its caption (read from the video cache: run the evaluation first)."""
    from dynamicrafter.recipe.report import contact_sheet

    cache = plan.out / "videos" / plan.sampling_tag / f"trained{trained_steps(plan)}"
    first = {}
    for clip in training_clips(plan):
        first.setdefault(clip.scene.motion, clip)
    rows = []
    for motion, clip in first.items():
        rows += [(f"clip: {clip.scene.caption}", clip.frames),
                 (f"base: {motion}", np.load(cache / f"{clip.scene.clip_id:08d}.npy"))]
    return contact_sheet(rows, path, frames_shown=tuple(range(0, plan.data.frames, 3)), scale=1)


def _pipe(path: Path):
    from dynamicrafter.pipeline import DynamiCrafterPipeline

    pipe = DynamiCrafterPipeline.from_checkpoint(path, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def markdown(plan: OverfitPlan, results: dict[str, dict], swapped, timings: dict[str, float]) -> str:
    from dynamicrafter.recipe.rescore import confusion_markdown

    motions = plan.data.motions
    counts = Counter(c.scene.motion for c in training_clips(plan))
    extra = "".join(f", {k.replace('_', ' ')} {v:g}" for k, v in (("eta", plan.eta),
                                                                   ("guidance_rescale", plan.guidance_rescale))
                    if v is not None)
    lines = ["# Overfit test of the base text-to-video model (centred 64 x 64 data)", "",
             f"{plan.clips} training clips (per motion: {', '.join(f'{m} {counts[m]}' for m in motions)}), "
             f"{trained_steps(plan)} steps at batch {plan.batch}, lr {plan.lr}; every training caption sampled once "
             f"({plan.sample_steps} steps, CFG {plan.guidance_scale}{extra}, the clip's frame stride) and read by the "
             f"tracker (the untrained control: the first {min(plan.control_clips, plan.clips)}). Share of videos "
             "showing the caption's motion:", "",
             "| videos | n | accuracy | " + " | ".join(motions) + " | median first-frame IoU | labels |",
             "|---|---|---|" + "---|" * len(motions) + "---|---|"]
    for name, s in results.items():
        per = " | ".join(f"{s['per_motion'][m]:.2f}" for m in motions)
        labels = ", ".join(f"{k} {v}" for k, v in sorted(s["labels"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {name} | {s['n']} | **{s['accuracy']:.2f}** | {per} | {s['first_iou']:.2f} | {labels} |")
    if swapped is not None:
        lines += ["", f"Swapped-caption test: the first {plan.swapped_clips} training captions, each with every "
                  "motion's phrase (same seed):", ""] + confusion_markdown(swapped)
    lines += ["", "Wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), ""]
    return "\n".join(lines)


def parse_plan(argv: list[str] | None) -> OverfitPlan:
    parser = argparse.ArgumentParser(prog="python -m dynamicrafter.recipe.overfit", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder (resumable)")
    parser.add_argument("--clips", type=int, default=OverfitPlan.clips)
    parser.add_argument("--steps", type=int, default=OverfitPlan.steps,
                        help="training steps (more than a finished run's: the run is continued from its checkpoint)")
    parser.add_argument("--batch", type=int, default=OverfitPlan.batch)
    parser.add_argument("--sample-steps", type=int, default=OverfitPlan.sample_steps)
    parser.add_argument("--guidance-scale", type=float, default=OverfitPlan.guidance_scale)
    parser.add_argument("--eta", type=float, default=None, help="DDIM eta (default: the model's, 1.0)")
    parser.add_argument("--guidance-rescale", type=float, default=None, help="CFG rescale (default: the model's)")
    parser.add_argument("--swapped-clips", type=int, default=OverfitPlan.swapped_clips,
                        help="training captions given every motion's phrase (the swapped-caption test; 0: skipped)")
    parser.add_argument("--control-clips", type=int, default=OverfitPlan.control_clips,
                        help="training captions sampled from the untrained U-Net (the control)")
    parser.add_argument("--init", type=Path, default=None, help="autoencoder + text tower source (default: shipped)")
    a = parser.parse_args(argv)
    return OverfitPlan(a.out, a.clips, a.steps, a.batch, sample_steps=a.sample_steps, guidance_scale=a.guidance_scale,
                       eta=a.eta, guidance_rescale=a.guidance_rescale, init=a.init, swapped_clips=a.swapped_clips,
                       control_clips=a.control_clips)


def main(argv: list[str] | None = None) -> int:
    plan = parse_plan(argv)
    torch.set_flush_denormal(True)
    t0 = time.perf_counter()
    init = prepare(plan)
    t1 = time.perf_counter()
    model = train_base(plan, init)
    t2 = time.perf_counter()
    results = evaluate(plan, model, init)
    swapped = swapped_test(plan, model) if plan.swapped_clips else None
    timings = {"prepare": t1 - t0, "train": t2 - t1, "evaluate": time.perf_counter() - t2}
    text = markdown(plan, results, swapped, timings)
    print(text)
    tag = f"t2v{trained_steps(plan)}_{plan.sampling_tag}"
    with atomic_path(plan.out / f"OVERFIT_{tag}.md") as tmp:
        tmp.write_text(text)
    write_figure(plan, plan.out / f"frames_{tag}.png")
    record = {"plan": {k: str(v) for k, v in asdict(plan).items()}, "trained_steps": trained_steps(plan),
              "results": results, "timings": timings}
    if swapped is not None:
        record["swapped"] = swapped.to_json()
    with atomic_path(plan.out / f"overfit_{tag}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
