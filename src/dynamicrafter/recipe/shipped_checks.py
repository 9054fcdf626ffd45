"""The shipped small model's measured behaviour: the figures tests/test_default_model.py asserts.

``python -m dynamicrafter.recipe.shipped_checks [--checkpoint PATH]`` prints them for a model (default: the shipped
one), so that a new shipped model's thresholds are re-measured with the same code the tests run.

Everything runs on held-out first frames of the model's own data (:data:`~dynamicrafter.recipe.tiny.CENTRED_DATA`,
one clip per motion, frame stride 2) at the model's default sampling settings (25 DDIM steps, CFG 3; rescale and
eta from its config), with the report's seeds (1234 + clip id), and is read by the validated motion tracker.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dynamicrafter.apps.checks import interpolation_report, loop_report, window_report
from dynamicrafter.data import synthetic as syn
from dynamicrafter.recipe import tracker as T
from dynamicrafter.recipe.evaluation import autoencoder_ceiling
from dynamicrafter.recipe.lambda_sweep import travel_pixels
from dynamicrafter.recipe.report import EvalSettings, generate, held_out_clips
from dynamicrafter.recipe.rescore import swapped_caption_test
from dynamicrafter.recipe.tiny import CENTRED_DATA

DATA = CENTRED_DATA
SETTINGS = EvalSettings(steps=25, guidance_scale=3.0)
TRANSLATIONS = ("left", "right", "up", "down")
Reading = tuple[T.MotionReading, T.Conformity]


def load_shipped(path: Path | None = None):
    """The shipped model (``path`` None) or another checkpoint, on CPU, progress bars off."""
    from dynamicrafter.pipeline import DynamiCrafterPipeline

    pipe = DynamiCrafterPipeline.from_checkpoint(path, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def first_frames(per_motion: int = 1) -> list[syn.SyntheticClip]:
    """Held-out clips of the shipped model's data, ``per_motion`` per motion in ``syn.MOTIONS`` order."""
    return held_out_clips(DATA, per_motion)


def true_caption_readings(pipe, clips: list[syn.SyntheticClip], **kwargs) -> list[Reading]:
    """Each clip's first frame animated with its own caption, read by the tracker (motion and conformity)."""
    return [T.motion_and_conformity(generate(pipe, clip, SETTINGS, **kwargs), clip.scene, DATA) for clip in clips]


def shown(readings: list[Reading], clips: list[syn.SyntheticClip]) -> int:
    """How many videos show the motion their clip's caption names."""
    return sum(r.verdict(c.scene.motion) == "correct" for (r, _), c in zip(readings, clips))


def swapped_shown(pipe, clips: list[syn.SyntheticClip]) -> tuple[int, int, dict[str, float]]:
    """The swapped-caption test on ``clips``' first frames: (videos showing the prompt's motion, videos, per motion)."""
    result = swapped_caption_test(pipe, clips, DATA, SETTINGS)
    videos = int(result.table.sum() + result.other.sum())
    return round(result.accuracy * videos), videos, result.per_motion()


def ceiling(pipe, clips: list[syn.SyntheticClip]) -> list[T.Conformity]:
    """The conformity of the autoencoder's reconstructions of the real clips: what a perfect generator reaches."""
    return autoencoder_ceiling(pipe, clips, DATA)


def conformity_means(readings: list[Reading], best: list[T.Conformity]) -> dict[str, float]:
    """Mean first-frame IoU and colour error of the videos and of the autoencoder ceiling."""
    return {"iou": float(np.mean([c.first_iou for _, c in readings])),
            "ceiling_iou": float(np.mean([c.first_iou for c in best])),
            "colour_error": float(np.mean([c.first_colour_error for _, c in readings])),
            "ceiling_colour_error": float(np.mean([c.first_colour_error for c in best]))}


def interpolation_ratios(pipe, clips: list[syn.SyntheticClip]) -> dict[str, tuple[float, float, bool]]:
    """For the left and right clips (ends far apart): start / cross and end / cross errors, and whether both ends
    (only) entered the VDG input."""
    ratios = {}
    for clip in (c for c in clips if c.scene.motion in ("left", "right")):
        report = interpolation_report(pipe, Image.fromarray(clip.frames[0]), Image.fromarray(clip.frames[-1]),
                                      clip.scene.caption, num_inference_steps=SETTINGS.steps)
        ratios[clip.scene.motion] = (report.start_error / report.cross_error, report.end_error / report.cross_error,
                                     report.vdg_ends)
    return ratios


def window_figures(pipe, clips: list[syn.SyntheticClip]):
    """32 frames in temporal windows from the left clip's first frame (apps.checks.WindowReport)."""
    clip = next(c for c in clips if c.scene.motion == "left")
    return window_report(pipe, Image.fromarray(clip.frames[0]), clip.scene.caption, num_frames=32,
                         num_inference_steps=SETTINGS.steps)


def loop_figures(pipe, clips: list[syn.SyntheticClip]) -> dict[str, tuple[float, float, float, set[int]]]:
    """Per loop method: (median seam / mean step, mean step, median first-frame error, frame counts) over clips."""
    figures = {}
    for method in ("ring", "closed", "open"):
        reports = [loop_report(pipe, Image.fromarray(c.frames[0]), c.scene.caption, method=method,
                               num_inference_steps=SETTINGS.steps) for c in clips]
        figures[method] = (float(np.median([r.seam_ratio for r in reports])),
                           float(np.mean([r.mean_step for r in reports])),
                           float(np.median([r.image_error for r in reports])), {r.frames for r in reports})
    return figures


def stride_travel(pipe, clips: list[syn.SyntheticClip], readings: list[Reading]) -> dict[int, float]:
    """Mean tracked travel (px) of the translation first frames at frame stride 1 and at their own stride (2)."""
    moving = [(c, r) for c, (r, _) in zip(clips, readings) if c.scene.motion in TRANSLATIONS]
    own = {c.scene.frame_stride for c, _ in moving}
    if own != {2}:
        raise ValueError(f"the translation clips should have frame stride 2, got {sorted(own)}")
    slow = true_caption_readings(pipe, [c for c, _ in moving], frame_stride=1)
    return {1: float(np.mean([travel_pixels(r) for r, _ in slow])),
            2: float(np.mean([travel_pixels(r) for _, r in moving]))}


def lambda_shown(pipe, clips: list[syn.SyntheticClip], readings: list[Reading]) -> dict[float, int]:
    """Of the moving first frames: how many videos show the prompt's motion at lambda x 1 (as trained) and x 2."""
    moving = [(c, r) for c, r in zip(clips, readings) if c.scene.motion != "still"]
    chosen = [c for c, _ in moving]
    doubled = true_caption_readings(pipe, chosen, image_attention_scale=2.0)
    return {1.0: shown([r for _, r in moving], chosen), 2.0: shown(doubled, chosen)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynamicrafter.recipe.shipped_checks",
                                     description="Print the figures tests/test_default_model.py asserts.")
    parser.add_argument("--checkpoint", type=Path, default=None, help="model (default: the shipped small model)")
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    pipe, clips = load_shipped(args.checkpoint), first_frames()
    t0 = time.perf_counter()

    def say(name: str, value) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {name}: {value}", flush=True)

    readings = true_caption_readings(pipe, clips)
    say("true captions shown (of 9)", f"{shown(readings, clips)}; labels "
        f"{[(c.scene.motion, r.label) for (r, _), c in zip(readings, clips)]}")
    say("conformity", conformity_means(readings, ceiling(pipe, clips)))
    say("swapped captions shown (first 2 frames)", swapped_shown(pipe, clips[:2]))
    say("interpolation end / cross", interpolation_ratios(pipe, clips))
    say("windows", window_figures(pipe, clips))
    say("stride travel", stride_travel(pipe, clips, readings))
    say("lambda shown (of 8 moving)", lambda_shown(pipe, clips, readings))
    say("loops", loop_figures(pipe, clips))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
