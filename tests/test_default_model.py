"""The shipped small model: used without a checkpoint argument, animates on CPU, and behaves as measured
(figures in reports/tiny/REPORT.md and the closing notes).

Thresholds are the figures measured on this model (stated next to each assertion) with a margin; the videos are
seeded, so the figures are reproducible on this platform. The model follows the prompt's motion above chance but far
from the 0.8 target (model card), and a loop's first frame is farther from the input in a ring loop than in a closed
one (median MSE 0.043 vs 0.026): those limits are stated here as measured, not asserted away.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dynamicrafter.apps.checks import interpolation_report, loop_report, window_report
from dynamicrafter.cli import main
from dynamicrafter.media import read_video_frames
from dynamicrafter.metrics.model_free import psnr
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.recipe.motion_eval import classify_motion, estimate_motion
from dynamicrafter.recipe.report import EvalSettings, generate, held_out_clips
from dynamicrafter.recipe.tiny import RECIPE_DATA
from dynamicrafter.weights import default_checkpoint

STEPS = 25


@pytest.fixture(scope="module")
def shipped() -> DynamiCrafterPipeline:
    """The shipped small model (not the random-weight ``pipe`` of the other modules)."""
    torch.set_flush_denormal(True)
    pipe = DynamiCrafterPipeline.from_checkpoint(device="cpu")  # no path: the shipped model
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def clips():
    return held_out_clips(RECIPE_DATA, 2)  # 2 held-out clips per motion (frame stride 2-3), 18 in all


def animate(pipe, clip, **kwargs) -> np.ndarray:
    """The clip's first frame animated with its caption, as the report does (25 steps, seed 1234 + clip id)."""
    return generate(pipe, clip, EvalSettings(steps=STEPS), **kwargs)


def test_shipped_model_is_the_default_and_small():
    path = default_checkpoint()
    assert path.name == "dynamicrafter_tiny.safetensors" and path.stat().st_size < 20 * 2**20


def test_cli_animates_without_a_checkpoint(tmp_path, capsys):
    image = "src/dynamicrafter/assets/examples/shapes_left.png"
    out = tmp_path / "left.mp4"
    assert main(["animate", image, "-p", "a green block slides to the left", "-o", str(out), "--steps", "10"]) == 0
    frames = read_video_frames(out)
    assert frames.shape == (16, 32, 32, 3)
    assert "loaded model 'tiny'" in capsys.readouterr().out


# measured: own-input PSNR 20.9 dB on average vs 10.3 dB against the other clips' inputs, own > others in 9 / 9
OWN_MINUS_OTHER_PSNR_MIN = 6.0
# measured: 5 of the 18 held-out clips (2 per motion) move as the prompt says (flow classifier); chance is 2 of 18
MOTION_CORRECT_MIN = 4
# measured: interpolation end errors / cross error 0.20 and 0.60 (left clip), 0.26 and 0.48 (right clip)
INTERP_END_TO_CROSS_MAX = 0.7
# measured: boundary step / interior step 0.59 (32 frames in 3 windows)
WINDOW_SEAM_FACTOR = 1.5
# measured on the 18 held-out clips, median seam / mean step: ring loops (the default) 0.88 (10 of 18 loops at or
# below 1), closed loops 1.98, open loops (the released way) 6.15; mean step (motion) 0.00466 ring, 0.00341 closed,
# 0.00310 open; first frame vs input image (median MSE) 0.043 ring, 0.026 closed, 0.025 open
RING_SEAM_MAX = 1.0  # the criterion: the seam is no larger than a typical step
RING_TO_CLOSED_MOTION_MIN = 0.8
RING_TO_CLOSED_IMAGE_ERROR_MAX = 2.5
CLOSED_TO_OPEN_SEAM_MAX = 0.6
CLOSED_TO_OPEN_MOTION_MIN = 0.8
# measured on the 8 held-out translation clips (flow translation over the clip, px at the flow size): lambda 0 / 1:
# 4.97 / 11.78 (ratio 0.42); frame stride 1 / 3: 11.02 / 11.99 (ratio 1.09)
LAMBDA_0_TO_1_MAX = 0.7
STRIDE_3_TO_1_MIN = 1.0


def test_first_frame_resembles_its_own_input_not_others(shipped, clips):
    clips = clips[::2]  # one clip per motion
    firsts = [animate(shipped, clip)[0] for clip in clips]
    own = np.array([psnr(f, c.frames[0]) for f, c in zip(firsts, clips)])
    other = np.array([np.mean([psnr(f, o.frames[0]) for o in clips if o is not c]) for f, c in zip(firsts, clips)])
    assert (own > other).all(), (own, other)
    assert own.mean() - other.mean() > OWN_MINUS_OTHER_PSNR_MIN, (own, other)


def test_motion_follows_the_prompt_above_chance(shipped, clips):
    predicted = [classify_motion(animate(shipped, clip)) for clip in clips]
    correct = sum(p == c.scene.motion for p, c in zip(predicted, clips))
    assert correct >= MOTION_CORRECT_MIN, list(zip([c.scene.motion for c in clips], predicted))


def test_interpolation_ends_reproduce_their_own_inputs(shipped, clips):
    moving = [c for c in clips if c.scene.motion != "still"]
    for clip in (moving[0], moving[3]):  # a "left" and a "right" clip: the ends are far apart
        report = interpolation_report(shipped, Image.fromarray(clip.frames[0]), Image.fromarray(clip.frames[-1]),
                                      clip.scene.caption, num_inference_steps=STEPS)
        assert report.vdg_ends
        assert report.start_error < INTERP_END_TO_CROSS_MAX * report.cross_error, (clip.scene.motion, report)
        assert report.end_error < INTERP_END_TO_CROSS_MAX * report.cross_error, (clip.scene.motion, report)


def test_windowed_32_frames_have_no_seam_jump(shipped, clips):
    clip = next(c for c in clips if c.scene.motion == "left")
    report = window_report(shipped, Image.fromarray(clip.frames[0]), clip.scene.caption, num_frames=32,
                           num_inference_steps=STEPS)
    assert report.frames == 32 and report.covered
    assert report.boundary_step <= WINDOW_SEAM_FACTOR * report.interior_step, report


@pytest.fixture(scope="module")
def loops(shipped, clips):
    """Per loop method: (median seam / mean step, mean step, median first-frame error, frames) over the clips."""
    figures = {}
    for method in ("ring", "closed", "open"):
        reports = [loop_report(shipped, Image.fromarray(c.frames[0]), c.scene.caption, method=method,
                               num_inference_steps=STEPS) for c in clips]
        figures[method] = (float(np.median([r.seam_ratio for r in reports])),
                           float(np.mean([r.mean_step for r in reports])),
                           float(np.median([r.image_error for r in reports])), {r.frames for r in reports})
    return figures


def test_ring_loops_wrap_seamlessly(loops):
    seam, motion, image_error, frames = loops["ring"]
    assert frames == {16}
    assert seam <= RING_SEAM_MAX, loops
    assert motion > RING_TO_CLOSED_MOTION_MIN * loops["closed"][1], loops
    assert image_error < RING_TO_CLOSED_IMAGE_ERROR_MAX * loops["closed"][2], loops


def test_closed_loops_wrap_with_a_smaller_seam_than_open_loops(loops):
    assert loops["closed"][3] == loops["open"][3] == {15}
    assert loops["closed"][0] < CLOSED_TO_OPEN_SEAM_MAX * loops["open"][0], loops
    assert loops["closed"][1] > CLOSED_TO_OPEN_MOTION_MIN * loops["open"][1], loops


def test_lambda_and_frame_stride_change_the_motion(shipped, clips):
    moving = [c for c in clips if c.scene.motion in ("left", "right", "up", "down")]

    def translation(**kwargs) -> float:
        return float(np.mean([estimate_motion(animate(shipped, c, **kwargs)).displacements["translation"]
                              for c in moving]))

    by_lambda = {s: translation(image_attention_scale=s) for s in (0.0, 1.0)}
    by_stride = {fs: translation(frame_stride=fs) for fs in (1, 3)}
    assert by_lambda[0.0] < LAMBDA_0_TO_1_MAX * by_lambda[1.0], by_lambda  # this model: more lambda, more motion
    assert by_stride[3] > STRIDE_3_TO_1_MIN * by_stride[1], by_stride
