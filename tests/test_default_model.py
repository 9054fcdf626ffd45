"""The shipped small model: used without a checkpoint argument, animates on CPU, and behaves as measured.

The model is the 64 x 64 one that ``dynamicrafter recipe tiny --data centred --train-temporal`` trains (data without
the first-frame shortcut: the first frame does not give the motion away). Its videos are read by the motion tracker
(``recipe.tracker``, validated in reports/tiny/evaluator/VALIDATION_CENTRED.md and in tests/test_tracker.py), on
held-out first frames of its own data, at its default sampling settings (25 DDIM steps, CFG 3, rescale 0.7, eta 1).

Thresholds are the figures measured on this model (stated next to each assertion) with a margin; the videos are
seeded, so the figures are reproducible on one platform, and the margins allow a video or two to read differently on
another CPU. ``python -m dynamicrafter.recipe.shipped_checks`` prints every figure below. The model follows the
prompt's motion well above chance but below the issue's 0.8 target (model card): those limits are stated as
measured, not asserted away.
"""

from __future__ import annotations

import pytest
import torch

from dynamicrafter.cli import main
from dynamicrafter.media import read_video_frames
from dynamicrafter.recipe import shipped_checks as S
from dynamicrafter.weights import default_checkpoint

# ---- the thresholds: the figure measured on the shipped model, then the margin (shipped_checks prints them) ----
# true captions, one held-out first frame per motion (9 videos): measured 6 of 9 show their prompt's motion (left read
# as rotate_cw; both rotations come out still)
TRUE_CAPTION_MIN = 5
# swapped captions, the first 2 held-out first frames x the 9 motion prompts (18 videos; chance 2 of 18): measured 10
SWAPPED_CAPTION_MIN = 8
# first frame of the 9 true-caption videos (means): shape IoU 0.922 against the autoencoder ceiling's 0.941 (ratio
# 0.98); object colour error 26.9 against the ceiling's 24.0 levels (0-255)
FIRST_IOU_TO_CEILING_MIN = 0.93
FIRST_COLOUR_ERROR_OVER_CEILING_MAX = 8.0
# interpolation end errors / cross error: measured 0.10 and 0.21 (left clip), 0.20 and 0.17 (right clip)
INTERP_END_TO_CROSS_MAX = 0.35
# boundary step / interior step: measured 0.61 (32 frames in 3 windows)
WINDOW_SEAM_FACTOR = 1.2
# over the 9 first frames, median seam / mean step: ring 1.11, closed 7.85, open 9.90; mean step (MSE) ring 0.00068,
# closed 0.00163, open 0.00169; frame 0 vs input image (median MSE) ring 0.0257, closed 0.0082, open 0.0074. Stated,
# not asserted: the ring moves less than the closed loop (0.42 x) and starts farther from the input (3.1 x).
RING_SEAM_MAX = 1.5  # the loop issue's criterion is <= 1 (a seam no larger than a typical step): measured 1.11
RING_TO_CLOSED_SEAM_MAX = 0.3
RING_IMAGE_ERROR_MAX = 0.05
CLOSED_TO_OPEN_SEAM_MAX = 1.0


@pytest.fixture(scope="module")
def shipped():
    """The shipped small model (not the random-weight ``pipe`` of the other modules)."""
    torch.set_flush_denormal(True)
    return S.load_shipped()


@pytest.fixture(scope="module")
def clips():
    return S.first_frames()  # one held-out first frame per motion (frame stride 2), in syn.MOTIONS order


@pytest.fixture(scope="module")
def readings(shipped, clips):
    return S.true_caption_readings(shipped, clips)


# ---- the tests ----


def test_shipped_model_is_the_default_and_small():
    path = default_checkpoint()
    assert path.name == "dynamicrafter_tiny.safetensors" and path.stat().st_size < 20 * 2**20


def test_cli_animates_without_a_checkpoint(tmp_path, capsys):
    image = "src/dynamicrafter/assets/examples/shapes_left.png"
    out = tmp_path / "left.mp4"
    assert main(["animate", image, "-p", "the shape moves to the left", "-o", str(out), "--steps", "10"]) == 0
    frames = read_video_frames(out)
    assert frames.shape == (16, 64, 64, 3)
    assert "loaded model 'tiny'" in capsys.readouterr().out


def test_motion_follows_the_true_caption(readings, clips):
    labels = [(c.scene.motion, r.label) for (r, _), c in zip(readings, clips)]
    assert S.shown(readings, clips) >= TRUE_CAPTION_MIN, labels


def test_motion_follows_a_swapped_caption(shipped, clips):
    """The same first frame with each motion's prompt: the text, not the image, names the motion."""
    correct, videos, per_motion = S.swapped_shown(shipped, clips[:2])
    assert videos == 18
    assert correct >= SWAPPED_CAPTION_MIN, per_motion


def test_first_frame_keeps_the_objects_shape_and_colour(shipped, readings, clips):
    m = S.conformity_means(readings, S.ceiling(shipped, clips))
    assert m["iou"] >= FIRST_IOU_TO_CEILING_MIN * m["ceiling_iou"], m
    assert m["colour_error"] <= m["ceiling_colour_error"] + FIRST_COLOUR_ERROR_OVER_CEILING_MAX, m


def test_interpolation_ends_reproduce_their_own_inputs(shipped, clips):
    ratios = S.interpolation_ratios(shipped, clips)
    assert set(ratios) == {"left", "right"} and all(vdg for _, _, vdg in ratios.values()), ratios
    assert all(r < INTERP_END_TO_CROSS_MAX for start, end, _ in ratios.values() for r in (start, end)), ratios


def test_windowed_32_frames_have_no_seam_jump(shipped, clips):
    report = S.window_figures(shipped, clips)
    assert report.frames == 32 and report.covered
    assert report.boundary_step <= WINDOW_SEAM_FACTOR * report.interior_step, report


@pytest.fixture(scope="module")
def loops(shipped, clips):
    return S.loop_figures(shipped, clips)


@pytest.mark.slow  # 27 loop videos: about 5 minutes of the default suite's 17 on a 2-core CPU (`pytest -m slow`)
def test_ring_loops_wrap_with_the_smallest_seam(loops):
    seam, _, image_error, frames = loops["ring"]
    assert frames == {16}
    assert seam <= RING_SEAM_MAX, loops
    assert seam <= RING_TO_CLOSED_SEAM_MAX * loops["closed"][0], loops
    assert image_error <= RING_IMAGE_ERROR_MAX, loops  # frame 0 stays on the input


@pytest.mark.slow
def test_closed_loops_wrap_with_a_smaller_seam_than_open_loops(loops):
    assert loops["closed"][3] == loops["open"][3] == {15}
    assert loops["closed"][0] < CLOSED_TO_OPEN_SEAM_MAX * loops["open"][0], loops
