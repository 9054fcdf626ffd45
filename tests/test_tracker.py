"""The motion tracker (recipe.tracker): right on held-out clips, robust to the degradations of generated clips and to
the autoencoder, honest about rotations it cannot see, and it rejects the controls. Also the swapped captions, the
conformity measures and the first-frame shortcut's classifiers."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from dynamicrafter.data import synthetic as syn
from dynamicrafter.errors import UserError
from dynamicrafter.recipe import tracker as T
from dynamicrafter.recipe import validate_tracker as V
from dynamicrafter.recipe.rescore import swap_caption
from dynamicrafter.recipe.shortcut import gaussian_predict, knn_predict
from dynamicrafter.recipe.tiny import RECIPE_DATA

DATA = RECIPE_DATA


@pytest.fixture(scope="module")
def clips() -> list[syn.SyntheticClip]:
    return V.test_clips(DATA, 1, (2, 3))  # one held-out clip per motion, strides 2-3


def read(frames: np.ndarray, clip: syn.SyntheticClip) -> T.MotionReading:
    return T.evaluate_motion(frames, clip.scene, DATA)


def test_shape_periods_are_measured_from_the_outlines():
    periods = {shape: T.shape_period(shape) for shape in syn.SHAPES if shape not in syn.ROUND_SHAPES}
    # the diamond (|u| + |v| <= 1) is a square turned by 45 degrees: 90, not the generator's table value 180
    assert periods == {"square": 90, "triangle": 120, "star": 72, "diamond": 90, "cross": 90, "hexagon": 60}


def test_reads_every_motion_of_clean_clips_and_follows_the_true_path(clips):
    for clip in clips:
        appearance = T.Appearance.from_scene(clip.scene, DATA)
        track = T.track_object(clip.frames, appearance)
        assert T.read_motion(track).label == clip.scene.motion, clip.scene
        x, y, radius, _ = syn.object_trajectory(clip.scene.main, clip.scene.motion, clip.scene.rate, len(clip.frames))
        assert np.abs(track.x - x).max() < 0.4 and np.abs(track.y - y).max() < 0.4
        assert np.abs(np.exp(track.log_radius) / radius - 1).max() < 0.06


def test_stays_right_on_degraded_clips(clips):
    """Blur 1.5 px + colour drift + shape distortion + noise: translations, zooms and still clips stay right; a
    rotation may become undetermined (its angle blurred away) but is never read as another motion."""
    for clip, frames in zip(clips, V.degrade(clips, V.generated_like, 0)):
        verdict = read(frames, clip).verdict(clip.scene.motion)
        allowed = ("correct", "undetermined") if clip.scene.motion.startswith("rotate") else ("correct",)
        assert verdict in allowed, (clip.scene, verdict)


def test_rejects_the_controls(clips):
    moving = [c for c in clips if c.scene.motion in ("left", "down", "zoom_out", "rotate_cw")]
    for key, (name, control) in enumerate(V.CONTROLS.items()):
        for clip, frames in zip(moving, V.degrade(moving, control, 100 + key)):
            reading = read(frames, clip)
            assert reading.verdict(clip.scene.motion) != "correct", (name, clip.scene.motion, reading.label)


def test_stays_right_on_the_shipped_autoencoders_reconstructions():
    """The shipped small model's autoencoder on clips of its own data (the centred 64 x 64 layout)."""
    from dynamicrafter.pipeline import DynamiCrafterPipeline
    from dynamicrafter.recipe.tiny import CENTRED_DATA

    torch.set_flush_denormal(True)
    pipe = DynamiCrafterPipeline.from_checkpoint(device="cpu")
    clips = V.test_clips(CENTRED_DATA, 1, (1, 2))
    picked = [c for c in clips if c.scene.motion in ("left", "up", "zoom_in", "zoom_out", "rotate_ccw", "still")]
    for clip, frames in zip(picked, V.autoencode(pipe, [c.frames for c in picked])):
        reading = T.evaluate_motion(frames, clip.scene, CENTRED_DATA)
        assert reading.label == clip.scene.motion, clip.scene


def test_a_plain_disc_turning_is_undetermined_not_guessed(clips):
    rotating = next(c for c in clips if c.scene.motion == "rotate_cw")
    disc = replace(rotating.scene, main=replace(rotating.scene.main, shape="circle", texture="solid"))
    reading = T.evaluate_motion(syn.render_scene(disc, DATA), disc, DATA)
    assert not reading.rotation_observable and reading.label == "still"
    assert reading.verdict("rotate_cw") == "undetermined" and reading.verdict("still") == "correct"
    assert reading.verdict("left") == "wrong"


def test_an_object_that_is_gone_is_lost(clips):
    clip = clips[0]
    empty = np.repeat(np.rint(syn.still_frame(clip.scene, DATA)).astype(np.uint8)[None], len(clip.frames), axis=0)
    assert read(empty, clip).label == "lost"


def test_conformity_is_perfect_on_the_input_and_drops_when_the_object_changes(clips):
    still = next(c for c in clips if c.scene.motion == "still")
    own = T.conformity(still.frames, still.scene, DATA)
    assert own.first_colour_error < 1.0 and own.first_iou > 0.99 and own.clip_colour_error < 1.0
    assert own.background_flicker == 0.0
    blurred = T.conformity(V.blur(2.0)(still.frames, None), still.scene, DATA)
    assert 0.3 < blurred.first_iou < own.first_iou
    greyed = still.frames.copy()
    greyed[..., :] = greyed.mean(axis=-1, keepdims=True).astype(np.uint8)  # colour gone, shape kept
    assert T.conformity(greyed, still.scene, DATA).first_colour_error > 20


def _phrase(caption: str, motion: str) -> str:
    return next(p for pair in syn.MOTION_PHRASES[motion] for p in pair if p in caption)


def test_swapped_captions_change_only_the_motion_phrase(clips):
    for clip in clips:
        caption, motion = clip.scene.caption, clip.scene.motion
        assert swap_caption(caption, motion, motion) == caption
        for other in syn.MOTIONS:
            swapped = swap_caption(caption, motion, other)
            assert swapped.replace(_phrase(swapped, other), "#") == caption.replace(_phrase(caption, motion), "#")
            swap_caption(swapped, other, motion)  # names ``other`` by exactly one phrase
    with pytest.raises(UserError, match="does not name the motion"):
        swap_caption("a red ball", "left", "right")


def test_shortcut_classifiers_find_a_given_away_label_and_not_a_hidden_one():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(600, 3))
    given_away = np.where(x[:, 0] > 0.5, "right", "left")  # the label is in the features
    hidden = rng.choice(["left", "right"], size=600)  # the label is not
    for predict in (knn_predict, gaussian_predict):
        assert np.mean(predict(x[:400], given_away[:400], x[400:]) == given_away[400:]) > 0.9
        assert np.mean(predict(x[:400], hidden[:400], x[400:]) == hidden[400:]) < 0.65


@pytest.mark.slow
def test_validation_table_on_two_clips_per_motion():
    torch.set_flush_denormal(True)
    validation = V.run_validation(per_motion=2, rotation_clips=8)
    results = {r.name: r for r in validation.conditions}
    assert results["clean (strides 2-3)"].rate() == 1.0
    assert all(r.rate() == 0.0 for r in validation.controls)
    assert "| autoencoder reconstruction |" in V.markdown(validation)


def test_rescore_tables_count_the_named_motion_and_the_first_frame_shortcut():
    from dynamicrafter.recipe.rescore import VideoRecord, swapped_table, true_caption_table

    def record(motion, prompt, label, verdict=None):
        return VideoRecord(0, motion, prompt, "square", label, verdict or ("correct" if label == prompt else "wrong"),
                           "still", True, 0.0, 1.0, 0.0, 0.0)

    motions = ("left", "right")
    # clip moving left: the true prompt is followed, the swapped one is not (the video still goes left)
    records = [record("left", "left", "left"), record("left", "right", "left"),
               record("right", "right", "right"), record("right", "left", "still")]
    true = true_caption_table(records, motions)
    assert true[2].startswith("| tracker (new): shows the motion | 1.000 | 1.00 | 1.00 |")
    swapped = swapped_table(records, motions)
    assert swapped[2].startswith("| tracker (new): shows the named motion | 0.500 | 0.50 | 0.50 |")
    shortcut = next(line for line in swapped if "own motion instead" in line)
    assert shortcut.startswith("| tracker: shows the clip's own motion instead (prompt names another) | 0.500 | "
                               "0.00 | 1.00 |")


def test_the_first_frame_gives_the_motion_away_in_the_released_layout_and_not_in_the_centred_one():
    from dynamicrafter.recipe.shortcut import comparison, measure
    from dynamicrafter.recipe.tiny import CENTRED_DATA

    def accuracy(rows, task, stride=None):
        picked = [r for r in rows if r["task"] == task and r["features"] == "position + size"
                  and (stride is None or r["stride"] == stride)]
        return max(r["accuracy"] for r in picked)

    before, after = measure(RECIPE_DATA, train=900, test=450), measure(CENTRED_DATA, train=900, test=450)
    assert accuracy(before, "9 motions", stride=3) > 0.5  # measured 0.73 on 4000 / 2000 clips
    assert accuracy(before, "translation direction (4)", stride=3) > 0.7
    # the best of two classifiers over ~75 test clips a stride and task: allow for luck above chance
    assert accuracy(after, "9 motions") < 1 / 9 + 0.08
    assert accuracy(after, "translation direction (4)") < 1 / 4 + 0.15
    assert accuracy(after, "zoom in / out / other (3)") < 7 / 9 + 0.07
    table = comparison(before, after)
    assert "released, stride 3 | centred, stride 1 | centred, stride 2 |" in table
    assert len(table.splitlines()) == 2 + 10  # header, rule, 5 tasks x 2 feature sets


def test_the_tracker_reads_the_centred_layouts_clips():
    from dynamicrafter.recipe.tiny import CENTRED_DATA

    clips = V.test_clips(CENTRED_DATA, 1, (1,))  # one held-out clip per motion at the slowest stride, 64 x 64
    result = V.score_condition("clean", clips, [c.frames for c in clips], CENTRED_DATA, flow=False)
    assert result.rate() == 1.0, list(zip(result.motions, result.labels))


def test_the_swapped_caption_confusion_counts_what_each_prompt_shows():
    from dynamicrafter.recipe.rescore import VideoRecord, confusion, confusion_markdown

    def record(motion, prompt, label):
        verdict = "undetermined" if label == "still" and prompt.startswith("rotate") else (
            "correct" if label == prompt else "wrong")
        clip_id = motions.index(motion)  # one first frame per clip motion
        return VideoRecord(clip_id, motion, prompt, "square", label, verdict, "", True, 0.0, 1.0, 0.0, 0.0)

    motions = ("left", "right", "rotate_cw")
    records = [record("left", "left", "left"), record("left", "right", "left"), record("left", "rotate_cw", "still"),
               record("right", "left", "irregular"), record("right", "right", "right"),
               record("right", "rotate_cw", "rotate_cw")]
    result = confusion(records, motions)
    assert result.table.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert result.other.tolist() == [1, 0, 1] and result.undetermined == 1  # "still" is not among these motions
    assert result.accuracy == pytest.approx(3 / 6) and result.first_frames == 2
    assert result.frame_accuracy == pytest.approx({0: 1 / 3, 1: 2 / 3})  # the units the bootstrap resamples
    assert result.interval().estimate == pytest.approx(result.accuracy)
    lines = confusion_markdown(result)
    assert lines[2] == "| left | **0.50** | 0.00 | 0.00 | 0.50 | 2 |"


def test_the_swapped_caption_test_on_a_tiny_random_pipeline():
    from dynamicrafter.config import config_for_tests
    from dynamicrafter.recipe.report import EvalSettings, held_out_clips
    from dynamicrafter.recipe.rescore import swapped_caption_test
    from dynamicrafter.testing import tiny_pipeline

    torch.set_flush_denormal(True)  # as the rescore command does: denormals make the random model's matmuls crawl
    data = replace(RECIPE_DATA, frames=4, height=16, width=16)  # small frames: the tracker searches long for noise
    pipe = tiny_pipeline(config_for_tests(height=16, width=16, num_frames=4))
    clips = held_out_clips(data, 1)[:1]
    result = swapped_caption_test(pipe, clips, data, EvalSettings(steps=2))
    assert result.motions == syn.MOTIONS and result.table.shape == (9, 9) and result.other.shape == (9,)
    assert int(result.table.sum() + result.other.sum()) == 9  # one video per prompt
    assert (result.table.sum(1) + result.other == 1).all()
    assert result.accuracy == pytest.approx(np.trace(result.table) / 9)
    with pytest.raises(UserError, match="at least one"):
        swapped_caption_test(pipe, [], data)


def test_score_videos_full_reads_motion_and_conformity_from_one_track():
    """rescore.score_videos with the conformity figures: a real clip scores its motion and IoU 1; the same clip
    reversed (offered as the second prompt's video) reads the opposite way and its first frame is elsewhere."""
    from dynamicrafter.recipe.report import held_out_clips
    from dynamicrafter.recipe.rescore import score_videos

    clips = held_out_clips(RECIPE_DATA, 1)[:2]  # left, right
    videos = {c.scene.clip_id: [c.frames, c.frames[::-1].copy()] for c in clips}
    records = score_videos(clips, videos, RECIPE_DATA, motions=("left", "right"), full=True)
    assert [(r.motion, r.prompt_motion, r.label) for r in records] == [
        ("left", "left", "left"), ("left", "right", "right"), ("right", "left", "right"), ("right", "right", "left")]
    assert [r.first_iou for r in records[::2]] == [1.0, 1.0] and all(r.first_iou < 0.5 for r in records[1::2])
    assert all(r.flow_label for r in records)


def test_prompt_figure_shows_the_real_clip_and_every_prompt(tmp_path):
    from PIL import Image

    from dynamicrafter.recipe.report import held_out_clips
    from dynamicrafter.recipe.rescore import prompt_figure

    clip = held_out_clips(RECIPE_DATA, 1)[0]
    videos = np.stack([clip.frames] * 3)
    path = prompt_figure(clip, videos, tmp_path / "frames.png", motions=("left", "right", "still"))
    h, w = clip.frames.shape[1:3]
    assert Image.open(path).size == (4 * 2 * w, 4 * (2 * h + 14))  # 4 frames wide; real clip + 3 prompts


def test_the_swapped_caption_result_reads_back_its_json_and_its_rows():
    from dynamicrafter.recipe.rescore import SwappedCaptionResult

    motions = ("left", "right", "still")
    result = SwappedCaptionResult(motions, np.array([[2, 0, 0], [1, 1, 0], [0, 0, 0]]), np.array([0, 2, 0]), 0,
                                  0.5, 2, {7: 0.5, 9: 0.5})
    again = SwappedCaptionResult.from_json(result.to_json())
    assert (again.table == result.table).all() and again.frame_accuracy == result.frame_accuracy
    assert again.motions == motions and again.accuracy == 0.5
    per = again.per_motion()
    assert per["left"] == 1.0 and per["right"] == 0.25 and np.isnan(per["still"])  # no prompt named still
