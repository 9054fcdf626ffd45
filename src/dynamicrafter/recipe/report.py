"""Measuring the small models on held-out generated images and prompts: the paper's Table 3 and Fig. 2 in miniature.

For every variant (full model, without the context stream, without VDG) and every held-out test clip, the first
frame is animated with the clip's caption and the video is scored:

* motion accuracy: the motion class estimated from the generated frames (:mod:`.motion_eval`, optical flow) equals
  the prompt's motion; chance = 1 / number of motions;
* input conformity (PIC-style): ``1 - mean_l D(input, frame_l)`` with D = 1 - cosine similarity of the project's
  trained CLIP image-tower embeddings (a documented stand-in for DreamSim, which cannot be downloaded here), plus the
  first-frame PSNR / SSIM against the input;
* temporal smoothness: the mean absolute difference of consecutive frames (flicker, 0-255; lower = smoother) and
  the motion magnitude (mean optical-flow magnitude).

Then lambda (the image cross-attention scale) and the frame stride are swept on the full model (paper Fig. 2:
lower lambda, more motion and less conformity).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from dynamicrafter.data import synthetic as syn
from dynamicrafter.media import atomic_path, save_video
from dynamicrafter.metrics.bootstrap import Interval, bootstrap_interval, paired_difference_interval
from dynamicrafter.metrics.model_free import model_free_metrics
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.recipe import tracker as T
from dynamicrafter.recipe.motion_eval import estimate_motion
from dynamicrafter.utils import process_map


@dataclass
class EvalSettings:
    clips_per_motion: int = 10
    steps: int = 25
    guidance_scale: float = 7.5
    seed: int = 1234
    eta: float | None = None  # DDIM eta; None: the model's default
    guidance_rescale: float | None = None  # CFG rescale; None: the model's default
    # s_img of three-branch CFG (diffusion.guidance); None: two branches. 1.0 guides the text alone against the
    # image-conditioned prediction without text (on the centred data the motion is named by the text alone).
    image_guidance_scale: float | None = None
    lambdas: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5)
    strides: tuple[int, ...] = (1, 2, 3)
    sweep_clips_per_motion: int = 3


@dataclass
class VideoScore:
    clip_id: int
    motion: str
    predicted: str
    caption: str
    conformity: float
    first_psnr: float
    first_ssim: float
    flicker: float
    motion_magnitude: float
    tracked: str = ""  # the tracker's label (:mod:`.tracker`), "" when the variant was not tracked
    verdict: str = ""  # the tracker's verdict against the prompt's motion: correct, wrong or undetermined
    # the tracker's conformity to the input (:class:`.tracker.Conformity`; NaN when not tracked)
    first_colour_error: float = float("nan")
    first_iou: float = float("nan")
    clip_colour_error: float = float("nan")


@dataclass
class VariantResult:
    name: str
    scores: list[VideoScore] = field(default_factory=list)
    seconds_per_video: float = 0.0

    @property
    def accuracy(self) -> float:
        return float(np.mean([s.motion == s.predicted for s in self.scores]))

    def mean(self, key: str) -> float:
        return float(np.mean([getattr(s, key) for s in self.scores]))

    def per_motion_accuracy(self) -> dict[str, float]:
        motions = sorted({s.motion for s in self.scores})
        return {m: float(np.mean([s.predicted == m for s in self.scores if s.motion == m])) for m in motions}

    @property
    def tracked(self) -> bool:
        return bool(self.scores) and all(s.verdict for s in self.scores)

    @property
    def tracker_accuracy(self) -> float:
        """Share of videos the tracker reads as showing the prompt's motion (NaN when not tracked)."""
        return float(np.mean([s.verdict == "correct" for s in self.scores])) if self.tracked else float("nan")

    def per_motion_tracker_accuracy(self) -> dict[str, float]:
        motions = sorted({s.motion for s in self.scores})
        return {m: float(np.mean([s.verdict == "correct" for s in self.scores if s.motion == m])) for m in motions}

    def per_clip(self, key: str) -> np.ndarray:
        """One value per clip, in clip order: ``key`` is a VideoScore field or "tracker_correct" (0 / 1)."""
        if key == "tracker_correct":
            return np.array([s.verdict == "correct" for s in self.scores], dtype=np.float64)
        return np.array([getattr(s, key) for s in self.scores], dtype=np.float64)

    def interval(self, key: str) -> Interval:
        """The mean of ``key`` over the clips with its bootstrap interval (:mod:`dynamicrafter.metrics.bootstrap`)."""
        return bootstrap_interval(self.per_clip(key))


MIN_EVAL_STRIDE = 2  # at frame stride 1 the slowest clips move ~2 pixels in 16 frames at 32 x 32


def held_out_clips(config: syn.SyntheticConfig, per_motion: int, min_stride: int = MIN_EVAL_STRIDE
                   ) -> list[syn.SyntheticClip]:
    """The first ``per_motion`` clips of every motion in the held-out ``test`` split with a frame stride of at least
    ``min_stride`` (deterministic)."""
    dataset = syn.SyntheticVideoDataset(replace_num_clips(config, 50 * per_motion * len(config.motions)), "test")
    chosen: dict[str, list[syn.SyntheticClip]] = {m: [] for m in config.motions}
    for index in range(len(dataset)):
        scene = dataset.scene(index)
        if scene.frame_stride >= min_stride and len(chosen[scene.motion]) < per_motion:
            chosen[scene.motion].append(dataset.clip(index))
        if all(len(v) == per_motion for v in chosen.values()):
            break
    return [clip for motion in config.motions for clip in chosen[motion]]


def replace_num_clips(config: syn.SyntheticConfig, n: int) -> syn.SyntheticConfig:
    data = asdict(config)
    data["num_clips"] = n
    return syn.SyntheticConfig(**data)


@torch.no_grad()
def image_embedding(pipe: DynamiCrafterPipeline, frames: np.ndarray) -> torch.Tensor:
    """Pooled, normalized CLIP image-tower embeddings (class token after ln_post) of uint8 frames (n, h, w, 3)."""
    x = torch.from_numpy(frames.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0).to(pipe.device, pipe.dtype)
    encoder = pipe.model.image_encoder
    pooled = encoder.transformer(pixel_values=encoder.preprocess(x)).pooler_output
    return F.normalize(pooled.float(), dim=-1)


def score_video(pipe: DynamiCrafterPipeline, clip: syn.SyntheticClip, frames: np.ndarray) -> VideoScore:
    image = clip.frames[0]
    embeddings = image_embedding(pipe, np.concatenate([image[None], frames]))
    conformity = float((embeddings[1:] @ embeddings[0]).mean())  # 1 - mean (1 - cos) = mean cos
    free = model_free_metrics(frames, image)
    estimate = estimate_motion(frames)
    return VideoScore(clip.scene.clip_id, clip.scene.motion, estimate.label, clip.scene.caption, conformity,
                      float(free.first_frame_psnr), float(free.first_frame_ssim), free.temporal_flicker,
                      free.motion_magnitude)


def generate(pipe: DynamiCrafterPipeline, clip: syn.SyntheticClip, settings: EvalSettings, **kwargs) -> np.ndarray:
    image = Image.fromarray(clip.frames[0])
    generator = torch.Generator().manual_seed(settings.seed + clip.scene.clip_id)
    kwargs.setdefault("frame_stride", clip.scene.frame_stride)  # the held-out clip's own stride
    for name in ("eta", "guidance_rescale", "image_guidance_scale"):
        if getattr(settings, name) is not None:
            kwargs.setdefault(name, getattr(settings, name))
    out = pipe(image, clip.scene.caption, num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
               generator=generator, output_type="np", **kwargs)
    return (out.frames[0] * 255).astype(np.uint8)  # (t, h, w, 3)


def evaluate_variant(name: str, pipe: DynamiCrafterPipeline, clips: list[syn.SyntheticClip],
                     settings: EvalSettings, video_dir: Path | None = None,
                     data: syn.SyntheticConfig | None = None, **kwargs) -> VariantResult:
    """Animate every clip's first frame with its caption and score the video; with ``data`` (the clips' data set)
    the tracker also reads each video's motion (in parallel processes, after generation)."""
    result = VariantResult(name)
    t0 = time.perf_counter()
    videos = []
    for clip in tqdm(clips, desc=f"evaluating {name}", unit="video"):
        frames = generate(pipe, clip, settings, **kwargs)
        if video_dir is not None:
            save_video(frames, video_dir / f"{name}_{clip.scene.motion}_{clip.scene.clip_id}.gif", fps=8)
        result.scores.append(score_video(pipe, clip, frames))
        videos.append(frames)
    result.seconds_per_video = (time.perf_counter() - t0) / max(len(clips), 1)
    if data is not None:
        readings = process_map(read_tracked_motion, [(c.scene, v, data) for c, v in zip(clips, videos)],
                               desc=f"tracking {name}", unit="video")
        for score, (label, verdict, conformity) in zip(result.scores, readings):
            score.tracked, score.verdict = label, verdict
            score.first_colour_error, score.first_iou = conformity.first_colour_error, conformity.first_iou
            score.clip_colour_error = conformity.clip_colour_error
    return result


def read_tracked_motion(scene: syn.Scene, video: np.ndarray, data: syn.SyntheticConfig
                        ) -> tuple[str, str, T.Conformity]:
    """The tracker's label of a video made from ``scene``'s first frame, its verdict against the scene's motion and
    the video's conformity to the input."""
    reading, conformity = T.motion_and_conformity(video, scene, data)
    return reading.label, reading.verdict(scene.motion), conformity


def ground_truth_accuracy(clips: list[syn.SyntheticClip]) -> float:
    """How often the flow classifier recovers the true motion of the real generated clips (its own accuracy)."""
    return float(np.mean([estimate_motion(c.frames).label == c.scene.motion for c in clips]))


def sweep(pipe: DynamiCrafterPipeline, clips: list[syn.SyntheticClip], settings: EvalSettings, option: str,
          values: tuple[float, ...], data: syn.SyntheticConfig | None = None) -> list[dict[str, float]]:
    rows = []
    for value in values:
        kwargs = {"image_attention_scale": value} if option == "lambda" else {"frame_stride": int(value)}
        result = evaluate_variant(f"{option}={value}", pipe, clips, settings, data=data, **kwargs)
        rows.append({option: value, "motion_magnitude": result.mean("motion_magnitude"),
                     "conformity": result.mean("conformity"), "accuracy": result.accuracy,
                     "tracker_accuracy": result.tracker_accuracy, "flicker": result.mean("flicker")})
    return rows


def contact_sheet(rows: list[tuple[str, np.ndarray]], path: Path, frames_shown: tuple[int, ...] = (0, 5, 10, 15),
                  scale: int = 2) -> Path:
    """A PNG grid: one row per (label, video (t, h, w, 3)), the chosen frames left to right, the label above."""
    h, w = rows[0][1].shape[1:3]
    h, w = h * scale, w * scale
    label_h = 14
    sheet = Image.new("RGB", (w * len(frames_shown), (h + label_h) * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, video) in enumerate(rows):
        y = r * (h + label_h)
        draw.text((2, y + 1), label[: 8 * len(frames_shown) * scale], fill="black")
        for c, index in enumerate(frames_shown):
            frame = Image.fromarray(video[min(index, len(video) - 1)]).resize((w, h), Image.NEAREST)
            sheet.paste(frame, (c * w, y + label_h))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def markdown_report(results: list[VariantResult], gt_accuracy: float, lambda_rows: list[dict], stride_rows: list[dict],
                    settings: EvalSettings, num_motions: int, extra: str = "") -> str:
    tracked = all(r.tracked for r in results)
    lines = [
        "# The small DynamiCrafter: held-out evaluation",
        "",
        f"{len(results[0].scores)} held-out test clips ({settings.clips_per_motion} per motion, {num_motions} motions; "
        f"chance = 1/{num_motions} = {1 / num_motions:.2f}); each first frame animated with its caption, "
        f"{settings.steps} DDIM steps, CFG {settings.guidance_scale}, each clip's own frame stride, "
        f"seed {settings.seed} + clip id. Motion accuracy (flow): the optical-flow classifier, which recovers the "
        f"true motion of the ground-truth clips in {gt_accuracy:.1%} of the cases (its own accuracy)"
        + ("; motion accuracy (tracker): the scene tracker (`recipe.tracker`, validated in "
           "reports/tiny/evaluator/)." if tracked else "."),
        "",
        "| variant | motion accuracy (flow) | " + ("motion accuracy (tracker) | " if tracked else "")
        + "input conformity (PIC*) | first-frame PSNR (dB) | first-frame SSIM | flicker | "
        "motion magnitude (px/frame) | s / video |",
        "|---|---|---|---|---|---|---|---|" + ("---|" if tracked else ""),
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.accuracy:.3f} | " + (f"{r.interval('tracker_correct').format(3)} | "
                                                            if tracked else "")
                     + f"{r.mean('conformity'):.3f} | {r.mean('first_psnr'):.1f} | {r.mean('first_ssim'):.3f} | "
                     f"{r.mean('flicker'):.2f} | {r.mean('motion_magnitude'):.2f} | {r.seconds_per_video:.1f} |")
    lines += ["", "PIC* = 1 - mean over frames of (1 - cosine similarity) of the project's CLIP image-tower "
              "embeddings (stand-in for DreamSim)." + (" Tracker accuracy: mean [95% bootstrap interval over the "
                                                       "clips]." if tracked else "")]
    tables = [("flow", VariantResult.per_motion_accuracy)] + ([("tracker", VariantResult.per_motion_tracker_accuracy)]
                                                            if tracked else [])
    for name, per_motion in tables:
        motions = per_motion(results[0])
        lines += ["", f"Per-motion accuracy ({name}):", "", "| variant | " + " | ".join(motions) + " |",
                  "|---|" + "---|" * len(motions)]
        lines += [f"| {r.name} | " + " | ".join(f"{v:.2f}" for v in per_motion(r).values()) + " |" for r in results]
    lines += _sweep_tables(lambda_rows, stride_rows)
    if extra:
        lines += ["", extra]
    return "\n".join(lines) + "\n"


CONFORMITY_COLUMNS = (("first_colour_error", "first-frame colour error (0-255)", 1),
                      ("first_iou", "first-frame shape IoU", 2), ("clip_colour_error", "colour error over the clip", 1))


def conformity_markdown(results: list[VariantResult], ceiling: list[T.Conformity]) -> list[str]:
    """The tracker's conformity figures per variant (mean [bootstrap interval]) and the autoencoder ceiling."""
    lines = ["", "Conformity to the input, read by the tracker (mean [95% bootstrap interval over the clips]; colour "
             "errors are RGB distances in 0-255 levels); the autoencoder's reconstruction of the real held-out clips "
             "is the ceiling (the base text-to-video model sees no image: its row is a control):", "",
             "| videos | " + " | ".join(title for _, title, _ in CONFORMITY_COLUMNS) + " |",
             "|---|" + "---|" * len(CONFORMITY_COLUMNS)]
    for r in results:
        lines.append(f"| {r.name} | " + " | ".join(r.interval(key).format(digits)
                                                    for key, _, digits in CONFORMITY_COLUMNS) + " |")
    if ceiling:
        lines.append("| autoencoder reconstruction of the real clip (ceiling) | " + " | ".join(
            bootstrap_interval([getattr(c, key) for c in ceiling]).format(digits)
            for key, _, digits in CONFORMITY_COLUMNS) + " |")
    return lines


def ablation_markdown(results: list[VariantResult], swapped: dict, reference: str = "full") -> list[str]:
    """Every variant minus ``reference`` on the same clips (paired bootstrap): motion accuracy (tracker), the
    swapped-caption accuracy (paired by first frame), first-frame IoU and colour error. Bold: the interval excludes
    0."""
    by_name = {r.name: r for r in results}
    if reference not in by_name or not by_name[reference].tracked:
        return []
    ref = by_name[reference]
    lines = ["", f"Differences to the {reference} model on the same held-out clips (variant - {reference}; "
             "difference [95% paired-bootstrap interval]; bold: the interval excludes 0, the difference is resolved by "
             "this test set):", "", "| variant | motion accuracy (tracker) | swapped-caption accuracy | first-frame "
             "shape IoU | first-frame colour error |", "|---|---|---|---|---|"]
    for r in results:
        if r is ref or not r.tracked:
            continue
        if [s.clip_id for s in r.scores] != [s.clip_id for s in ref.scores]:
            raise ValueError(f"variant {r.name!r} was scored on other clips than {reference!r}")
        cells = [paired_difference_interval(r.per_clip(k), ref.per_clip(k))
                 for k in ("tracker_correct", "first_iou", "first_colour_error")]
        pair = _swapped_pair(swapped.get(r.name), swapped.get(reference))
        cells.insert(1, paired_difference_interval(*pair) if pair else None)
        lines.append(f"| {r.name} | " + " | ".join(_bold_if_resolved(c, d) for c, d in zip(cells, (2, 2, 2, 1)))
                     + " |")
    return lines


def _swapped_pair(a, b) -> tuple[list[float], list[float]] | None:
    """The per-first-frame swapped-caption accuracies of two variants on their common first frames."""
    if a is None or b is None:
        return None
    frames = sorted(set(a.frame_accuracy) & set(b.frame_accuracy))
    return ([a.frame_accuracy[f] for f in frames], [b.frame_accuracy[f] for f in frames]) if frames else None


def _bold_if_resolved(interval: Interval | None, digits: int) -> str:
    if interval is None:
        return "-"
    text = interval.format(digits, signed=True)
    return f"**{text}**" if interval.excludes(0.0) else text


def _sweep_tables(lambda_rows: list[dict], stride_rows: list[dict]) -> list[str]:
    lines = []
    for title, rows, key in (("Lambda (image cross-attention scale) on the full model (paper Fig. 2)", lambda_rows,
                              "lambda"), ("Frame stride on the full model", stride_rows, "frame_stride")):
        lines += ["", f"{title}:", "", f"| {key} | motion magnitude | conformity (PIC*) | motion accuracy (flow) | "
                  "motion accuracy (tracker) | flicker |", "|---|---|---|---|---|---|"]
        for row in rows:
            lines.append(f"| {row[key]} | {row['motion_magnitude']:.2f} | {row['conformity']:.3f} | "
                         f"{row['accuracy']:.2f} | {row.get('tracker_accuracy', float('nan')):.2f} | "
                         f"{row['flicker']:.2f} |")
    return lines


def save_json(data: object, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=lambda o: asdict(o)))
