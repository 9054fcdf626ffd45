"""The base model's overfit test (recipe.overfit): its scoring reads the training clips themselves as right, rejects
reversed clips, and its summary and report count what they claim."""

from pathlib import Path

import numpy as np
import pytest

from dynamicrafter.recipe import overfit as O


@pytest.fixture(scope="module")
def plan() -> O.OverfitPlan:
    return O.OverfitPlan(out=Path("unused"), clips=18, steps=1, batch=1)


@pytest.fixture(scope="module")
def clips(plan):
    chosen, seen = [], set()
    for clip in O.training_clips(plan):  # one clip of each motion the first 18 hold
        if clip.scene.motion not in seen and clip.scene.motion != "still":
            seen.add(clip.scene.motion)
            chosen.append(clip)
    assert len(chosen) >= 4, seen
    return chosen[:4]


def test_training_clips_are_the_centred_train_split(plan):
    clips = O.training_clips(plan)
    assert len(clips) == plan.clips == plan.data.num_clips
    assert clips[0].frames.shape[1:3] == (plan.data.height, plan.data.width)


def test_score_reads_the_clips_right_and_rejects_reversed_ones(plan, clips):
    true_rows = O.score(clips, [c.frames for c in clips], plan.data)
    assert [r["verdict"] for r in true_rows] == ["correct"] * len(clips), true_rows
    assert all(r["first_iou"] > 0.9 for r in true_rows), true_rows
    reversed_rows = O.score(clips, [c.frames[::-1].copy() for c in clips], plan.data)
    assert not any(r["verdict"] == "correct" for r in reversed_rows), reversed_rows


def test_summary_counts_and_report_prints_every_motion(plan):
    rows = [{"motion": "left", "label": "left", "verdict": "correct", "first_iou": 0.9, "first_colour_error": 1.0},
            {"motion": "left", "label": "right", "verdict": "wrong", "first_iou": 0.5, "first_colour_error": 3.0},
            {"motion": "up", "label": "up", "verdict": "correct", "first_iou": 0.7, "first_colour_error": 2.0}]
    s = O.summary(rows, plan.data.motions)
    assert s["accuracy"] == pytest.approx(2 / 3) and s["n"] == 3
    assert s["per_motion"]["left"] == 0.5 and s["per_motion"]["up"] == 1.0 and np.isnan(s["per_motion"]["down"])
    assert s["labels"] == {"left": 1, "right": 1, "up": 1}
    assert s["first_iou"] == pytest.approx(0.7)
    text = O.markdown(plan, {"trained base": s}, {"train": 12.0})
    assert "| trained base | 3 | **0.67** |" in text and all(m in text for m in plan.data.motions)
