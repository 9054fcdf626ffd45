"""Re-scoring a model with the motion tracker: true captions and the swapped-caption test.

``python -m dynamicrafter.recipe.rescore [--checkpoint PATH] [--per-motion 10] --cache DIR [--out DIR]
[--confusion-only]`` animates the report's held-out first frames (:func:`.report.held_out_clips`, each clip's own
frame stride, the report's sampling settings and seeds) once per motion prompt: the clip's caption with its motion
phrase replaced by each of the 9 motions' (:func:`swap_caption`; the true caption is the one naming the clip's own
motion). Every video is scored by the tracker (:mod:`.tracker`) and by the old flow classifier (:mod:`.motion_eval`),
side by side:

* true captions: does the video show the clip's motion (the report's motion accuracy);
* swapped captions: does the video show the motion the prompt names, for every prompt (the measure of text-based
  motion control), and how often it shows the clip's own motion instead (the first-frame shortcut); the full
  prompt x shown-motion confusion table (:func:`swapped_caption_test`, alone with ``--confusion-only``);
* conformity: colour error and shape IoU of the first frame, colour error over the clip and background flicker, next
  to the same figures of the autoencoder's reconstructions of the real clips (the ceiling).

Videos are cached per clip in ``--cache`` (an interrupted run resumes).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dynamicrafter.data import synthetic as syn
from dynamicrafter.errors import UserError
from dynamicrafter.media import atomic_path
from dynamicrafter.metrics.bootstrap import Interval, bootstrap_interval
from dynamicrafter.recipe import tracker as T
from dynamicrafter.recipe.motion_eval import classify_motion
from dynamicrafter.recipe.report import EvalSettings, contact_sheet, generate, held_out_clips
from dynamicrafter.recipe.tiny import DATA_PRESETS
from dynamicrafter.recipe.validate_tracker import autoencode
from dynamicrafter.utils import process_map


def swap_caption(caption: str, motion: str, new_motion: str) -> str:
    """``caption`` (of a clip showing ``motion``) with its motion phrase replaced by ``new_motion``'s phrase of the
    same index and form (present tense or gerund); the rest of the caption is kept word for word."""
    found = [(form, i, phrase) for i, pair in enumerate(syn.MOTION_PHRASES[motion]) for form, phrase in enumerate(pair)
             if phrase in caption]
    if len(found) != 1:
        raise UserError(f"caption {caption!r} does not name the motion {motion!r} by exactly one known phrase "
                        f"(found {[p for _, _, p in found]}); captions come from dynamicrafter.data.synthetic")
    form, index, phrase = found[0]
    options = syn.MOTION_PHRASES[new_motion]
    return caption.replace(phrase, options[index % len(options)][form])


def generate_videos(pipe, clips: list[syn.SyntheticClip], settings: EvalSettings, cache: Path | None,
                    motions: tuple[str, ...] = syn.MOTIONS) -> dict[int, np.ndarray]:
    """Per clip id: uint8 videos (len(motions), t, h, w, 3), the first frame animated with each motion's caption
    (same seed for all); cached as ``cache/<clip id>.npy`` (kept in memory only when ``cache`` is None). A cached
    file is trusted: use one cache folder per model and sampling settings."""
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    videos = {}
    for clip in tqdm(clips, desc="animating with every motion prompt", unit="clip"):
        path = None if cache is None else cache / f"{clip.scene.clip_id:08d}.npy"
        if path is not None and path.is_file():
            videos[clip.scene.clip_id] = np.load(path)
            continue
        stack = []
        for motion in motions:
            caption = swap_caption(clip.scene.caption, clip.scene.motion, motion)
            stack.append(generate(pipe, syn.SyntheticClip(clip.frames, replace(clip.scene, caption=caption)),
                                  settings))
        videos[clip.scene.clip_id] = np.stack(stack)
        if path is not None:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, videos[clip.scene.clip_id])
    return videos


@dataclass
class VideoRecord:
    clip_id: int
    motion: str  # the clip's own motion
    prompt_motion: str  # the motion the prompt names
    shape: str
    label: str  # tracker
    verdict: str  # tracker, against the prompt's motion
    flow_label: str  # old flow classifier
    rotation_observable: bool
    first_colour_error: float
    first_iou: float
    clip_colour_error: float
    background_flicker: float


def score_videos(clips: list[syn.SyntheticClip], videos: dict[int, np.ndarray], data: syn.SyntheticConfig,
                 motions: tuple[str, ...] = syn.MOTIONS, full: bool = True) -> list[VideoRecord]:
    """A record per video (clip x prompt motion): the tracker's label and verdict, and with ``full`` the old flow
    classifier's label and the conformity figures (else ``""`` and NaN: the tracker alone is much faster). Videos are
    scored in parallel, one process per CPU core."""
    jobs = [(clip.scene, motion, video, data, full) for clip in clips
            for motion, video in zip(motions, videos[clip.scene.clip_id])]
    return process_map(_score_video, jobs, desc="scoring", unit="video")


def _score_video(scene: syn.Scene, motion: str, video: np.ndarray, data: syn.SyntheticConfig, full: bool
                 ) -> VideoRecord:
    """One video generated from ``scene``'s first frame with ``motion``'s prompt, read by the tracker."""
    if full:
        reading, conformity = T.motion_and_conformity(video, scene, data)
        conf = asdict(conformity)
    else:
        reading = T.evaluate_motion(video, scene, data)
        conf = {k: math.nan for k in ("first_colour_error", "first_iou", "clip_colour_error", "background_flicker")}
    return VideoRecord(scene.clip_id, scene.motion, motion, scene.main.shape, reading.label, reading.verdict(motion),
                       classify_motion(video) if full else "", reading.rotation_observable, **conf)


@dataclass
class SwappedCaptionResult:
    """The swapped-caption test: every first frame animated with every motion prompt, read by the tracker.

    ``table[i, j]``: videos whose prompt names ``motions[i]`` and that show ``motions[j]``; ``other[i]``: those that
    show none of them (``irregular`` or ``lost``). ``accuracy``: share of all videos that show the motion their prompt
    names (a turn whose angle the video does not show is not counted as shown); chance is 1 / len(motions).
    """

    motions: tuple[str, ...]
    table: np.ndarray  # (n, n) int
    other: np.ndarray  # (n,) int
    undetermined: int  # rotation prompts whose video shows no readable angle (see tracker.MotionReading.verdict)
    accuracy: float
    first_frames: int
    # per first frame (clip id): the share of its videos that show the prompt's motion; the unit a bootstrap resamples
    frame_accuracy: dict[int, float] = field(default_factory=dict)

    def interval(self, seed: int = 0) -> Interval:
        """The accuracy with its bootstrap interval over the first frames (each frame's prompts resampled as one)."""
        return bootstrap_interval(list(self.frame_accuracy.values()), seed=seed)

    def per_motion(self) -> dict[str, float]:
        """Per prompt motion: the share of its videos that show it (NaN for a motion no prompt named)."""
        shown = np.diag(self.table) / np.maximum(self.table.sum(1) + self.other, 1)
        return {m: float(v) if self.table[i].sum() + self.other[i] else math.nan
                for i, (m, v) in enumerate(zip(self.motions, shown))}

    def to_json(self) -> dict:
        return {"motions": list(self.motions), "table": self.table.tolist(), "other": self.other.tolist(),
                "undetermined": self.undetermined, "accuracy": self.accuracy, "first_frames": self.first_frames,
                "frame_accuracy": {str(k): v for k, v in self.frame_accuracy.items()}}

    @classmethod
    def from_json(cls, payload: dict) -> SwappedCaptionResult:
        """The inverse of :meth:`to_json` (a swapped.json, or a report's results.json ``swapped`` entry)."""
        return cls(tuple(payload["motions"]), np.asarray(payload["table"], dtype=np.int64),
                   np.asarray(payload["other"], dtype=np.int64), int(payload.get("undetermined", 0)),
                   float(payload["accuracy"]), int(payload.get("first_frames", 0)),
                   {int(k): float(v) for k, v in payload.get("frame_accuracy", {}).items()})


def confusion(records: list[VideoRecord], motions: tuple[str, ...] = syn.MOTIONS) -> SwappedCaptionResult:
    """The prompt-motion x shown-motion table of ``records`` (from :func:`score_videos`)."""
    index = {m: i for i, m in enumerate(motions)}
    table = np.zeros((len(motions), len(motions)), dtype=np.int64)
    other = np.zeros(len(motions), dtype=np.int64)
    for r in records:
        if r.label in index:
            table[index[r.prompt_motion], index[r.label]] += 1
        else:
            other[index[r.prompt_motion]] += 1
    accuracy = _share(records, lambda r: r.verdict == "correct")
    by_frame: dict[int, list[bool]] = {}
    for r in records:
        by_frame.setdefault(r.clip_id, []).append(r.verdict == "correct")
    return SwappedCaptionResult(motions, table, other, sum(r.verdict == "undetermined" for r in records), accuracy,
                                len(by_frame), {k: float(np.mean(v)) for k, v in by_frame.items()})


def swapped_caption_test(pipe, clips: list[syn.SyntheticClip], data: syn.SyntheticConfig,
                         settings: EvalSettings | None = None, cache: Path | None = None,
                         motions: tuple[str, ...] = syn.MOTIONS) -> SwappedCaptionResult:
    """Animate each held-out first frame of ``clips`` with every motion's prompt (its caption with the motion phrase
    swapped, same seed) through ``pipe`` and tell with the tracker which motion each video shows."""
    if not clips:
        raise UserError("the swapped-caption test needs at least one held-out first frame")
    videos = generate_videos(pipe, clips, settings or EvalSettings(), cache, motions)
    return confusion(score_videos(clips, videos, data, motions, full=False), motions)


def confusion_markdown(result: SwappedCaptionResult) -> list[str]:
    """The confusion table: a row per prompt motion (share of its videos showing each motion), its accuracy."""
    short = [m.replace("rotate_", "rot ") for m in result.motions]
    lines = ["| prompt names \\ video shows | " + " | ".join(short) + " | irregular / lost | videos |",
             "|---|" + "---|" * (len(short) + 2)]
    for i, motion in enumerate(result.motions):
        n = int(result.table[i].sum() + result.other[i])
        cells = " | ".join((f"**{c / n:.2f}**" if j == i else f"{c / n:.2f}") if n else "-"
                           for j, c in enumerate(result.table[i]))
        lines.append(f"| {motion} | {cells} | {result.other[i] / max(n, 1):.2f} | {n} |")
    total = int(result.table.sum() + result.other.sum())
    lines += ["", f"Accuracy (video shows the motion its prompt names): **{result.accuracy:.3f}** of {total} videos "
              f"({result.first_frames} first frames x {len(result.motions)} prompts; chance "
              f"{1 / len(result.motions):.3f}); rotation prompts with no readable angle (undetermined, not counted "
              f"as shown): {result.undetermined}."]
    return lines


def _share(records: list[VideoRecord], test) -> float:
    return float(np.mean([test(r) for r in records])) if records else math.nan


def true_caption_table(records: list[VideoRecord], motions: tuple[str, ...]) -> list[str]:
    true = [r for r in records if r.prompt_motion == r.motion]
    lines = ["| measure | all | " + " | ".join(motions) + " |", "|---|---|" + "---|" * len(motions)]
    for name, test in (("tracker (new): shows the motion", lambda r: r.verdict == "correct"),
                       ("tracker: undetermined", lambda r: r.verdict == "undetermined"),
                       ("flow classifier (old)", lambda r: r.flow_label == r.prompt_motion)):
        per = " | ".join(f"{_share([r for r in true if r.motion == m], test):.2f}" for m in motions)
        lines.append(f"| {name} | {_share(true, test):.3f} | {per} |")
    return lines


def swapped_table(records: list[VideoRecord], motions: tuple[str, ...]) -> list[str]:
    """Per named motion, over every first frame: shows the named motion (tracker / flow), and, when the prompt names
    another motion than the clip's, shows the clip's own motion instead."""
    lines = ["| measure (every first frame x every motion prompt) | all | " + " | ".join(motions) + " |",
             "|---|---|" + "---|" * len(motions)]
    swapped = [r for r in records if r.prompt_motion != r.motion and r.motion != "still"]
    rows = (("tracker (new): shows the named motion", records, lambda r: r.verdict == "correct"),
            ("tracker: undetermined", records, lambda r: r.verdict == "undetermined"),
            ("flow classifier (old): shows the named motion", records, lambda r: r.flow_label == r.prompt_motion),
            ("tracker: shows the clip's own motion instead (prompt names another)", swapped,
             lambda r: r.label == r.motion),
            ("tracker: still", records, lambda r: r.label == "still"))
    for name, subset, test in rows:
        per = " | ".join(f"{_share([r for r in subset if r.prompt_motion == m], test):.2f}" for m in motions)
        lines.append(f"| {name} | {_share(subset, test):.3f} | {per} |")
    return lines


def label_counts(records: list[VideoRecord]) -> str:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.label] = counts.get(r.label, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def conformity_rows(name: str, records: list[VideoRecord], ceiling: list[T.Conformity]) -> list[str]:
    keys = ("first_colour_error", "first_iou", "clip_colour_error", "background_flicker")
    lines = ["| videos | first-frame colour error (0-255) | first-frame shape IoU | colour error over the clip | "
             "background flicker (0-255) |", "|---|---|---|---|---|"]
    for label, subset in ((f"{name}, true captions", [r for r in records if r.prompt_motion == r.motion]),
                          (f"{name}, all prompts", records)):
        lines.append(f"| {label} | " + " | ".join(f"{np.mean([getattr(r, k) for r in subset]):.3f}" for k in keys)
                     + " |")
    lines.append("| autoencoder reconstruction of the real clip (ceiling) | " + " | ".join(
        f"{np.mean([getattr(c, k) for c in ceiling]):.3f}" for k in keys) + " |")
    return lines


def markdown(name: str, records: list[VideoRecord], ceiling: list[T.Conformity], clips: int,
             motions: tuple[str, ...], old: dict[str, float] | None = None) -> str:
    true = [r for r in records if r.prompt_motion == r.motion]
    lines = [f"# {name}: motion re-scored with the tracker", "",
             f"{clips} held-out first frames (the report's clips and sampling settings), each animated with the "
             f"{len(motions)} motion prompts (its caption with the motion phrase swapped); same seed per frame.", "",
             "True captions (the report's motion accuracy):", "", *true_caption_table(records, motions), "",
             f"Tracker labels, true captions: {label_counts(true)}.", "",
             "Swapped captions (text-based motion control):", "", *swapped_table(records, motions), "",
             f"Tracker labels, all prompts: {label_counts(records)}.", "",
             "Which motion each video shows, by the motion its prompt names (tracker; share of the row's videos):", "",
             *confusion_markdown(confusion(records, motions)), "",
             "Conformity to the input:", "", *conformity_rows(name, records, ceiling)]
    if old:
        lines += ["", "Earlier report (flow classifier, reports/tiny/results.json): " + ", ".join(
            f"{k} {v:.3f}" for k, v in old.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynamicrafter.recipe.rescore",
                                     description="Re-score a model's motion with the tracker (true and swapped "
                                                 "captions).")
    parser.add_argument("--checkpoint", type=Path, default=None, help="model (default: the shipped small model)")
    parser.add_argument("--name", default="shipped model")
    parser.add_argument("--per-motion", type=int, default=10, help="held-out first frames per motion (default 10)")
    parser.add_argument("--cache", type=Path, required=True, help="folder for the generated videos (resumable)")
    parser.add_argument("--out", type=Path, default=None, help="folder for RESCORE.md and rescore.json")
    parser.add_argument("--confusion-only", action="store_true",
                        help="only the swapped-caption test's confusion table and accuracy (tracker only, no flow "
                             "classifier or conformity; writes SWAPPED.md and swapped.json to --out)")
    parser.add_argument("--layout", choices=tuple(DATA_PRESETS), default="released",
                        help="the data the model was trained on (its held-out clips are the first frames)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="CFG scale (default: the model's)")
    parser.add_argument("--eta", type=float, default=None, help="DDIM eta (default: the model's)")
    parser.add_argument("--image-guidance-scale", type=float, default=None,
                        help="image CFG scale of three-branch guidance; 1 guides the text alone (default: two "
                             "branches)")
    args = parser.parse_args(argv)
    from dynamicrafter.pipeline import DynamiCrafterPipeline

    torch.set_flush_denormal(True)
    pipe = DynamiCrafterPipeline.from_checkpoint(args.checkpoint, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    data = DATA_PRESETS[args.layout]
    guidance = pipe.config.defaults.guidance_scale if args.guidance_scale is None else args.guidance_scale
    settings = EvalSettings(guidance_scale=guidance, eta=args.eta, image_guidance_scale=args.image_guidance_scale)
    clips = held_out_clips(data, args.per_motion)
    if args.confusion_only:
        return _confusion_only(args, pipe, clips, data, settings)
    videos = generate_videos(pipe, clips, settings, args.cache)
    records = score_videos(clips, videos, data)
    ceiling = [T.conformity(v, c.scene, data) for c, v in zip(clips, autoencode(pipe, [c.frames for c in clips]))]
    old_path = Path("reports/tiny/results.json")
    old = {v["name"]: v["accuracy"] for v in json.loads(old_path.read_text())["variants"]} if old_path.is_file() \
        else None
    text = markdown(args.name, records, ceiling, len(clips), syn.MOTIONS, old)
    print(text)
    if args.out is not None:
        write_report_files(args.out, "RESCORE.md", text, "rescore.json",
                      {"records": [asdict(r) for r in records], "ceiling": [asdict(c) for c in ceiling]})
        prompt_figure(clips[0], videos[clips[0].scene.clip_id], args.out / "frames.png")
    return 0


def prompt_figure(clip: syn.SyntheticClip, videos: np.ndarray, path: Path,
                  motions: tuple[str, ...] = syn.MOTIONS) -> Path:
    """Frames 0, 5, 10, 15 of the real clip and of its first frame animated with each motion prompt."""
    rows = [(f"real clip: {clip.scene.caption}", clip.frames)]
    rows += [(f"prompt: {swap_caption(clip.scene.caption, clip.scene.motion, m)}", v) for m, v in zip(motions, videos)]
    return contact_sheet(rows, path)


def write_report_files(out: Path, md_name: str, text: str, json_name: str, payload: dict) -> None:
    """The markdown report and its numbers, each written atomically into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / md_name) as tmp:
        tmp.write_text(text)
    with atomic_path(out / json_name) as tmp:
        tmp.write_text(json.dumps(payload, indent=1))


def _confusion_only(args: argparse.Namespace, pipe, clips: list[syn.SyntheticClip], data: syn.SyntheticConfig,
                    settings: EvalSettings) -> int:
    result = swapped_caption_test(pipe, clips, data, settings, args.cache)
    text = "\n".join([f"# {args.name}: the swapped-caption test", "",
                      f"{len(clips)} held-out first frames (the report's clips and sampling settings), each animated "
                      f"with the {len(result.motions)} motion prompts; the tracker reads which motion each video "
                      f"shows (share of the row's videos).", "", *confusion_markdown(result)]) + "\n"
    print(text)
    if args.out is not None:
        write_report_files(args.out, "SWAPPED.md", text, "swapped.json", result.to_json())
        videos = generate_videos(pipe, clips[:1], settings, args.cache)  # cached: read back
        prompt_figure(clips[0], videos[clips[0].scene.clip_id], args.out / "frames.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
