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
    text = O.markdown(plan, {"trained base": s}, None, {"train": 12.0})
    assert "| trained base | 3 | **0.67** |" in text and all(m in text for m in plan.data.motions)
    assert "Swapped-caption" not in text


def test_sampling_settings_name_the_cache_and_reach_the_pipeline(tmp_path):
    plan = O.parse_plan(["--out", str(tmp_path), "--guidance-scale", "3", "--eta", "0", "--swapped-clips", "2"])
    assert plan.sampling_tag == "steps25_cfg3_eta0" and plan.swapped_clips == 2
    assert O.parse_plan(["--out", str(tmp_path)]).sampling_tag == "steps25_cfg7.5"  # the model's own eta and rescale
    assert plan.settings.eta == 0.0 and plan.settings.guidance_rescale is None

    seen = {}

    class Pipe:  # records what generate() asks of the pipeline
        def __call__(self, image, caption, **kwargs):
            seen.update(kwargs)
            raise StopIteration

    clip = O.training_clips(O.OverfitPlan(tmp_path, clips=1))[0]
    with pytest.raises(StopIteration):
        O.generate(Pipe(), clip, plan.settings)
    assert seen["eta"] == 0.0 and seen["guidance_scale"] == 3.0 and "guidance_rescale" not in seen


def test_a_longer_plan_continues_a_finished_run(tmp_path):
    plan = O.OverfitPlan(tmp_path, steps=4000)
    assert O.trained_steps(plan) == 0
    checkpoints = tmp_path / "t2v" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for step in (250, 2000):
        (checkpoints / f"step-{step:08d}.ckpt").write_bytes(b"")
    (tmp_path / "t2v" / "model.safetensors").write_bytes(b"")
    assert O.trained_steps(plan) == 2000
    # a finished run as long as the plan is reused as it is, without loading anything
    export = O.train_base(O.OverfitPlan(tmp_path, steps=2000), tmp_path / "init")
    assert export == tmp_path / "t2v" / "model.safetensors"


def test_figure_shows_each_motion_s_clip_above_its_sample(tmp_path):
    from PIL import Image

    plan = O.OverfitPlan(tmp_path, clips=18)
    (tmp_path / "t2v" / "checkpoints").mkdir(parents=True)
    (tmp_path / "t2v" / "checkpoints" / "step-00000100.ckpt").write_bytes(b"")
    cache = tmp_path / "videos" / plan.sampling_tag / "trained100"
    cache.mkdir(parents=True)
    clips = O.training_clips(plan)
    for clip in clips:  # stand-in samples: the clips played backwards
        np.save(cache / f"{clip.scene.clip_id:08d}.npy", clip.frames[::-1])
    motions = {c.scene.motion for c in clips}
    image = np.asarray(Image.open(O.write_figure(plan, tmp_path / "figure.png")).convert("RGB"))
    size, label = plan.data.height, 14
    assert image.shape == (2 * len(motions) * (size + label), 6 * size, 3)  # frames 0, 3, ..., 15
    first = clips[0]
    row = 2 * list(dict.fromkeys(c.scene.motion for c in clips)).index(first.scene.motion)
    y = row * (size + label) + label
    assert np.array_equal(image[y:y + size, :size], first.frames[0])  # the clip's first frame
    y += size + label
    assert np.array_equal(image[y:y + size, :size], first.frames[-1])  # its (reversed) sample's first frame
