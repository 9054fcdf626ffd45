"""The lambda sweep (paper Fig. 2) of a trained small model, read by the motion tracker.

``python -m dynamicrafter.recipe.lambda_sweep --layout centred --checkpoint PATH [--scales 0 0.5 1 1.5 2]
[--per-motion 2] --cache DIR [--out DIR]`` animates the report's held-out first frames with their true captions at
each factor s on the learned image cross-attention scale lambda (``image_attention_scale``: the context stream's
output is s * lambda * Attn(z, image tokens); s = 1 is the model as trained, s = 0 removes the context stream, VDG
stays). The paper's claim: a larger lambda holds the video to the image and suppresses motion, a smaller one moves
more and loses the input's appearance. Per s, from the tracker (:mod:`.tracker`):

* motion: the share of moving-prompt videos showing their motion, the share read as ``still`` (motion suppressed),
  and the tracked travel in pixels over the clip (translation distance + zoom edge travel + rotation arc);
* conformity: first-frame colour error and shape IoU, colour error over the clip.

The real held-out clips are the reference row (their tracked travel, the autoencoder's reconstructions as the
conformity ceiling). Videos are cached per (s, clip) in ``--cache`` (an interrupted run resumes).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dynamicrafter.data import synthetic as syn
from dynamicrafter.errors import ConfigError
from dynamicrafter.media import atomic_path
from dynamicrafter.metrics.bootstrap import Interval, bootstrap_interval, paired_difference_interval
from dynamicrafter.recipe import tracker as T
from dynamicrafter.recipe.report import EvalSettings, contact_sheet, generate, held_out_clips
from dynamicrafter.recipe.rescore import write_report_files
from dynamicrafter.recipe.tiny import DATA_PRESETS
from dynamicrafter.recipe.validate_tracker import autoencode
from dynamicrafter.utils import process_map

DEFAULT_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0)
MAX_SCALE = 4.0  # past this the image attention dominates the sum of the two cross-attentions


def travel_pixels(reading: T.MotionReading) -> float:
    """The object's tracked travel over the clip in pixels: translation distance + |zoom edge travel| + |rotation
    arc at the radius| (the arc counts 0 where the object shows no angle)."""
    rotation = abs(reading.rotation) if math.isfinite(reading.rotation) else 0.0
    return float(math.hypot(*reading.translation) + abs(reading.zoom) + rotation)


@dataclass
class SweepRecord:
    """One video (clip x scale) as the tracker reads it."""

    scale: float | None  # s on lambda; None for the real clips / the autoencoder's reconstructions
    clip_id: int
    motion: str  # the clip's motion, named by the prompt
    label: str  # what the tracker reads
    verdict: str  # correct / wrong / undetermined against ``motion``
    travel: float  # :func:`travel_pixels`
    first_colour_error: float
    first_iou: float
    clip_colour_error: float


def score(scale: float | None, scene: syn.Scene, video: np.ndarray, data: syn.SyntheticConfig) -> SweepRecord:
    """The tracker's reading and the conformity of one video made from ``scene``'s first frame."""
    reading, conformity = T.motion_and_conformity(video, scene, data)
    return SweepRecord(scale, scene.clip_id, scene.motion, reading.label, reading.verdict(scene.motion),
                       travel_pixels(reading), conformity.first_colour_error, conformity.first_iou,
                       conformity.clip_colour_error)


def generate_sweep(pipe, clips: list[syn.SyntheticClip], settings: EvalSettings, scales: tuple[float, ...],
                   cache: Path | None) -> dict[tuple[float, int], np.ndarray]:
    """Per (scale, clip id) the uint8 video (t, h, w, 3) of the clip's first frame and true caption at that scale,
    same seed for every scale; cached as ``cache/s<scale>_<clip id>.npy``."""
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    videos = {}
    jobs = [(s, clip) for s in scales for clip in clips]
    for s, clip in tqdm(jobs, desc="lambda sweep", unit="video"):
        path = cache / f"s{s:g}_{clip.scene.clip_id:08d}.npy" if cache is not None else None
        if path is not None and path.is_file():
            videos[s, clip.scene.clip_id] = np.load(path)
            continue
        video = generate(pipe, clip, settings, image_attention_scale=s)
        if path is not None:
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, video)
        videos[s, clip.scene.clip_id] = video
    return videos


@dataclass
class SweepRow:
    """The figures of one scale (or of the reference clips) over its videos."""

    name: str
    moving_accuracy: Interval  # share of moving-prompt videos showing their motion (bootstrap over the videos)
    still_share: float  # share of moving-prompt videos read as still
    travel: Interval  # mean tracked travel (px) of the moving-prompt videos (bootstrap over the videos)
    still_prompt_travel: float  # mean tracked travel (px) of the still-prompt videos (0 for a faithful still)
    first_colour_error: float
    first_iou: float
    clip_colour_error: float

    @classmethod
    def of(cls, name: str, records: list[SweepRecord]) -> SweepRow:
        moving = [r for r in records if r.motion != "still"]
        still = [r for r in records if r.motion == "still"]
        if not moving:
            raise ConfigError(f"no moving clip among the {len(records)} sweep videos: use --per-motion 1 or more")
        return cls(name, bootstrap_interval([r.verdict == "correct" for r in moving]),
                   float(np.mean([r.label == "still" for r in moving])), bootstrap_interval([r.travel for r in moving]),
                   float(np.mean([r.travel for r in still])) if still else math.nan,
                   *(float(np.mean([getattr(r, k) for r in records]))
                     for k in ("first_colour_error", "first_iou", "clip_colour_error")))


def markdown(name: str, rows: list[SweepRow], clips: int, settings: EvalSettings) -> str:
    lines = [f"# {name}: the lambda sweep (paper Fig. 2)", "",
             f"{clips} held-out first frames, each animated with its true caption at every factor s on the learned "
             f"lambda (CFG {settings.guidance_scale:g}, {settings.steps} DDIM steps, same seed per clip for every s); "
             "the tracker reads each video. Moving prompts: all but still; 95% bootstrap interval over their videos.",
             "",
             "| videos | motion shown (moving prompts) | read as still (moving prompts) | travel, moving prompts (px) "
             "| travel, still prompt (px) | first-frame colour error | first-frame IoU | colour error over the clip |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.name} | {row.moving_accuracy.format(3)} | {row.still_share:.3f} | "
                     f"{row.travel.format(1)} | {row.still_prompt_travel:.1f} | {row.first_colour_error:.1f} | "
                     f"{row.first_iou:.3f} | {row.clip_colour_error:.1f} |")
    return "\n".join(lines) + "\n"


PAIRED = (("correct", "motion shown (moving prompts)", 2), ("travel", "travel, moving prompts (px)", 1),
          ("first_iou", "first-frame IoU", 3), ("clip_colour_error", "colour error over the clip", 1))


def _value(record: SweepRecord, key: str) -> float:
    return float(record.verdict == "correct") if key == "correct" else float(getattr(record, key))


def paired_markdown(records: list[SweepRecord], scales: tuple[float, ...], reference: float = 1.0) -> list[str]:
    """Each scale minus ``reference`` on the same clips and seeds (paired bootstrap over the clips; motion and travel
    over the moving prompts): the trends the sweep resolves. Empty when ``reference`` was not swept."""
    if reference not in scales:
        return []
    by_scale = {s: {r.clip_id: r for r in records if r.scale == s} for s in scales}
    ref = by_scale[reference]
    lines = ["", f"Paired differences to s = {reference:g} (the same clips and seeds; difference [95% paired-bootstrap "
             "interval over the clips]):", "", "| s | " + " | ".join(title for _, title, _ in PAIRED) + " |",
             "|---|" + "---|" * len(PAIRED)]
    for s in scales:
        if s == reference:
            continue
        cells = []
        for key, _, digits in PAIRED:
            ids = [i for i in ref if key in ("first_iou", "clip_colour_error") or ref[i].motion != "still"]
            diff = paired_difference_interval([_value(by_scale[s][i], key) for i in ids],
                                              [_value(ref[i], key) for i in ids])
            cells.append(diff.format(digits, signed=True))
        lines.append(f"| {s:g} | " + " | ".join(cells) + " |")
    return lines


def sweep(pipe, clips: list[syn.SyntheticClip], data: syn.SyntheticConfig, settings: EvalSettings,
          scales: tuple[float, ...], cache: Path | None) -> tuple[list[SweepRow], list[SweepRecord], dict]:
    """Rows: the real clips, the autoencoder's reconstructions, then every scale; with all records and videos."""
    videos = generate_sweep(pipe, clips, settings, scales, cache)
    reference = {"real clips": [c.frames for c in clips],
                 "autoencoder reconstructions": autoencode(pipe, [c.frames for c in clips])}
    jobs = [(None, c.scene, v, data) for frames in reference.values() for c, v in zip(clips, frames)]
    jobs += [(s, c.scene, videos[s, c.scene.clip_id], data) for s in scales for c in clips]
    records = process_map(score, jobs, desc="tracking", unit="video")
    n = len(clips)
    rows = [SweepRow.of(label, records[i * n:(i + 1) * n]) for i, label in enumerate(reference)]
    rows += [SweepRow.of(f"s = {s:g}", [r for r in records if r.scale == s]) for s in scales]
    return rows, records, videos


def check_scales(scales: list[float]) -> tuple[float, ...]:
    bad = [s for s in scales if not 0.0 <= s <= MAX_SCALE]
    if bad or not scales:
        raise ConfigError(f"--scales {scales} must be one or more factors in [0, {MAX_SCALE:g}] (1 = the model as "
                          f"trained, 0 = no context stream); out of range: {bad}")
    return tuple(dict.fromkeys(float(s) for s in scales))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynamicrafter.recipe.lambda_sweep",
                                     description="The lambda sweep of a trained small model, read by the tracker.")
    parser.add_argument("--checkpoint", type=Path, default=None, help="model (default: the shipped small model)")
    parser.add_argument("--name", default="shipped model")
    parser.add_argument("--layout", choices=tuple(DATA_PRESETS), default="released",
                        help="the data the model was trained on (its held-out clips are the first frames)")
    parser.add_argument("--scales", type=float, nargs="+", default=list(DEFAULT_SCALES),
                        help=f"factors s on lambda (default {' '.join(f'{s:g}' for s in DEFAULT_SCALES)})")
    parser.add_argument("--per-motion", type=int, default=2, help="held-out first frames per motion (default 2)")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the generated videos (resumable)")
    parser.add_argument("--out", type=Path, default=None, help="folder for LAMBDA.md, lambda.json and frames.png")
    args = parser.parse_args(argv)
    scales = check_scales(args.scales)
    from dynamicrafter.pipeline import DynamiCrafterPipeline

    torch.set_flush_denormal(True)
    pipe = DynamiCrafterPipeline.from_checkpoint(args.checkpoint, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    data = DATA_PRESETS[args.layout]
    settings = EvalSettings(guidance_scale=pipe.config.defaults.guidance_scale)
    clips = held_out_clips(data, args.per_motion)
    rows, records, videos = sweep(pipe, clips, data, settings, scales, args.cache)
    text = markdown(args.name, rows, len(clips), settings) + "\n".join(paired_markdown(records, scales)) + "\n"
    print(text)
    if args.out is not None:
        write(args.out, text, rows, records, settings)
        clip = next(c for c in clips if c.scene.motion != "still")
        contact_sheet([(f"real clip: {clip.scene.caption}", clip.frames)]
                      + [(f"s = {s:g}", videos[s, clip.scene.clip_id]) for s in scales], args.out / "frames.png")
    return 0


def write(out: Path, text: str, rows: list[SweepRow], records: list[SweepRecord], settings: EvalSettings) -> None:
    payload = {"settings": asdict(settings),
               "rows": [{**asdict(r), "moving_accuracy": r.moving_accuracy.to_json(), "travel": r.travel.to_json()}
                        for r in rows], "records": [asdict(r) for r in records]}
    write_report_files(out, "LAMBDA.md", text, "lambda.json", payload)

if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
