"""The lambda sweep (recipe.lambda_sweep): its travel measure on real clips and controls, its rows, and a run on a
tiny random pipeline where the scale must reach the network."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from dynamicrafter.errors import ConfigError
from dynamicrafter.recipe import lambda_sweep as L
from dynamicrafter.recipe import tracker as T
from dynamicrafter.recipe.report import EvalSettings, held_out_clips
from dynamicrafter.recipe.tiny import CENTRED_DATA, RECIPE_DATA


def test_travel_is_the_clips_motion_and_zero_for_the_controls():
    clips = held_out_clips(CENTRED_DATA, 1)  # one held-out clip per motion, in syn.MOTIONS order
    config = T.DEFAULT_TRACKER
    for clip in clips:
        reading = T.evaluate_motion(clip.frames, clip.scene, CENTRED_DATA)
        travel = L.travel_pixels(reading)
        if clip.scene.motion == "still":
            assert travel < config.translation_px, travel
        elif clip.scene.motion in ("left", "right", "up", "down"):
            assert travel >= config.translation_px, (clip.scene.motion, travel)
        frozen = np.repeat(clip.frames[:1], len(clip.frames), axis=0)  # control: the first frame held
        assert L.travel_pixels(T.evaluate_motion(frozen, clip.scene, CENTRED_DATA)) < 0.5


def test_rows_count_moving_prompts_and_keep_the_still_prompt_apart():
    def record(motion, label, travel, scale=1.0):
        verdict = "correct" if label == motion else "wrong"
        return L.SweepRecord(scale, 0, motion, label, verdict, travel, 10.0, 0.8, 20.0)

    records = [record("left", "left", 12.0), record("up", "still", 1.0), record("zoom_in", "zoom_in", 8.0),
               record("still", "still", 0.5)]
    row = L.SweepRow.of("s = 1", records)
    assert row.moving_accuracy.estimate == pytest.approx(2 / 3)
    assert row.still_share == pytest.approx(1 / 3)
    assert row.travel.estimate == pytest.approx(7.0) and row.still_prompt_travel == pytest.approx(0.5)
    assert row.first_iou == pytest.approx(0.8)
    assert "| s = 1 | 0.667 [" in L.markdown("m", [row], 4, EvalSettings())
    with pytest.raises(ConfigError, match="no moving clip"):
        L.SweepRow.of("s = 1", records[-1:])


def test_scales_out_of_range_are_refused_with_the_values():
    assert L.check_scales([0, 1, 1, 2]) == (0.0, 1.0, 2.0)
    with pytest.raises(ConfigError, match=r"out of range: \[-1.0, 5.0\]"):
        L.check_scales([-1.0, 1.0, 5.0])


def test_the_sweep_on_a_tiny_random_pipeline_reaches_the_network_and_resumes(tmp_path):
    from dynamicrafter.config import config_for_tests
    from dynamicrafter.testing import tiny_pipeline

    torch.set_flush_denormal(True)
    data = replace(RECIPE_DATA, frames=4, height=16, width=16)
    pipe = tiny_pipeline(config_for_tests(height=16, width=16, num_frames=4))
    clips = held_out_clips(data, 1)[:2]  # left, right
    settings = EvalSettings(steps=2)
    rows, records, videos = L.sweep(pipe, clips, data, settings, (0.0, 1.0), tmp_path)
    assert [r.name for r in rows] == ["real clips", "autoencoder reconstructions", "s = 0", "s = 1"]
    assert len(records) == 4 * len(clips) and len(list(tmp_path.glob("s*.npy"))) == 2 * len(clips)
    clip_id = clips[0].scene.clip_id
    assert not np.array_equal(videos[0.0, clip_id], videos[1.0, clip_id])  # the scale changes the video
    assert rows[0].first_iou == 1.0 and rows[0].first_colour_error < 1.0  # the real first frame is the input
    again = L.generate_sweep(None, clips, settings, (0.0, 1.0), tmp_path)  # cached: no pipeline needed
    assert all(np.array_equal(again[k], v) for k, v in videos.items())
    L.write(tmp_path / "report", L.markdown("tiny", rows, len(clips), settings), rows, records, settings)
    payload = json.loads((tmp_path / "report" / "lambda.json").read_text())
    assert [r["name"] for r in payload["rows"]] == [r.name for r in rows] and len(payload["records"]) == len(records)
    assert "| s = 0 |" in (tmp_path / "report" / "LAMBDA.md").read_text()


def test_paired_differences_are_taken_clip_by_clip_against_s_1():
    def record(scale, clip_id, motion, correct, travel, iou):
        return L.SweepRecord(scale, clip_id, motion, motion if correct else "still",
                             "correct" if correct else "wrong", travel, 10.0, iou, 20.0)

    records = [record(1.0, 1, "left", True, 10.0, 0.8), record(1.0, 2, "up", True, 20.0, 0.9),
               record(1.0, 3, "still", True, 0.0, 0.7),
               record(2.0, 1, "left", False, 12.0, 0.9), record(2.0, 2, "up", True, 24.0, 0.9),
               record(2.0, 3, "still", True, 9.0, 0.7)]
    lines = L.paired_markdown(records, (1.0, 2.0))
    row = lines[-1]
    assert row.startswith("| 2 | -0.50 [") and "| +3.0 [" in row  # moving prompts only: (2 + 4) / 2 px
    assert "+0.033 [" in row  # first-frame IoU over all three clips
    assert L.paired_markdown(records, (2.0,)) == []  # no s = 1 to compare with
