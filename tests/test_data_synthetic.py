"""The generated captioned video data set: determinism, real motion, captions, splits, writers."""

import json
import re
import time
from collections import defaultdict

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dynamicrafter.cli import main
from dynamicrafter.data.index import read_table
from dynamicrafter.data.synthetic import (
    COLOUR_WORDS,
    COLOURS,
    MOTION_PHRASES,
    MOTIONS,
    SHAPE_NOUNS,
    SHAPES,
    Motion,
    SyntheticConfig,
    SyntheticVideoDataset,
    make_scene,
    render_scene,
    split_clip_ids,
    write_prompt_images,
    write_video_split,
)
from dynamicrafter.data.video import VideoClipDataset, VideoDataConfig
from dynamicrafter.errors import ConfigError

SATURATION_THRESHOLD = 60  # backgrounds are neutral (max - min channel <= ~50); object colours are saturated


def object_mask(frames: np.ndarray) -> np.ndarray:
    """Boolean ``(t, h, w)``: pixels of a saturated colour (the objects)."""
    frames = frames.astype(np.int16)
    return frames.max(axis=-1) - frames.min(axis=-1) > SATURATION_THRESHOLD


def clips_with(motion: str, count: int = 3, **kwargs) -> list:
    config = SyntheticConfig(num_clips=400, max_distractors=0, **kwargs)
    dataset = SyntheticVideoDataset(config)
    found = [i for i in range(len(dataset)) if dataset.scene(i).motion == motion][:count]
    assert len(found) == count
    return [dataset.clip(i) for i in found]


def test_motions_are_exported():
    assert MOTIONS == ("left", "right", "up", "down", "zoom_in", "zoom_out", "rotate_cw", "rotate_ccw", "still")
    assert Motion.ZOOM_IN == "zoom_in" and set(MOTION_PHRASES) == set(MOTIONS)


def test_sample_format():
    dataset = SyntheticVideoDataset(SyntheticConfig(num_clips=5, seed=3))
    sample = dataset[0]
    assert set(sample) == {"video", "caption", "path", "fps", "frame_stride", "motion", "labels"}
    video = sample["video"]
    assert video.dtype == torch.float32 and tuple(video.shape) == (3, 16, 64, 64)
    assert video.min() >= -1 and video.max() <= 1
    assert sample["motion"] in MOTIONS and sample["labels"]["motion"] == sample["motion"]
    assert sample["labels"]["shape"] in SHAPES and sample["labels"]["colour"] in COLOURS
    assert sample["path"].startswith("synthetic://train/") and (sample["fps"], sample["frame_stride"]) == (8, 1)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert tuple(batch["video"].shape) == (4, 3, 16, 64, 64) and len(batch["labels"]["motion"]) == 4
    small = SyntheticVideoDataset(SyntheticConfig(num_clips=1, frames=8, height=32, width=48))[0]["video"]
    assert tuple(small.shape) == (3, 8, 32, 48)


def test_deterministic_by_seed():
    a, b = (SyntheticVideoDataset(SyntheticConfig(num_clips=6, seed=1)) for _ in range(2))
    other = SyntheticVideoDataset(SyntheticConfig(num_clips=6, seed=2))
    for i in range(6):
        assert torch.equal(a[i]["video"], b[i]["video"]) and a[i]["caption"] == b[i]["caption"]
    assert not all(torch.equal(a[i]["video"], other[i]["video"]) for i in range(6))
    assert [a[i]["caption"] for i in range(6)] != [other[i]["caption"] for i in range(6)]
    # a clip does not depend on how many clips the data set has
    bigger = SyntheticVideoDataset(SyntheticConfig(num_clips=50, seed=1))
    assert torch.equal(bigger[5]["video"], a[5]["video"])


def test_rendering_is_fast():
    dataset = SyntheticVideoDataset(SyntheticConfig(num_clips=40))
    dataset[0]
    start = time.perf_counter()
    for i in range(40):
        dataset[i]
    assert (time.perf_counter() - start) / 40 < 0.05  # typically ~5 ms for 16x64x64 on one CPU core


@pytest.mark.parametrize("motion,axis,sign", [("left", 1, -1), ("right", 1, 1), ("up", 0, -1), ("down", 0, 1)])
def test_translations_move_the_main_object(motion, axis, sign):
    for clip in clips_with(motion):
        mask = object_mask(clip.frames)
        centroids = np.array([np.argwhere(m).mean(axis=0) for m in mask])  # (t, [y, x])
        expected = clip.scene.rate * (len(mask) - 1)
        assert sign * (centroids[-1, axis] - centroids[0, axis]) == pytest.approx(expected, abs=1.5)
        assert abs(centroids[-1, 1 - axis] - centroids[0, 1 - axis]) < 1.0
        assert np.all(sign * np.diff(centroids[:, axis]) > 0)


@pytest.mark.parametrize("motion", ["zoom_in", "zoom_out"])
def test_zoom_changes_the_size(motion):
    for clip in clips_with(motion):
        areas = object_mask(clip.frames).sum(axis=(1, 2)).astype(float)
        growth = areas[-1] / areas[0]
        assert growth > 1.5 if motion == "zoom_in" else growth < 1 / 1.5
        assert np.all(np.diff(areas) > 0) if motion == "zoom_in" else np.all(np.diff(areas) < 0)


def rotation_error(frames: np.ndarray, centre: tuple[float, float], degrees: float, step: int) -> float:
    """Mean abs difference between frame ``step`` and frame 0 rotated clockwise (on screen) by ``degrees``."""
    h, w = frames.shape[1:3]
    matrix = cv2.getRotationMatrix2D((centre[1], centre[0]), -degrees, 1.0)  # OpenCV: positive = counter-clockwise
    rotated = cv2.warpAffine(frames[0], matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
    mask = object_mask(frames[step: step + 1])[0] | object_mask(frames[:1])[0]
    return float(np.abs(rotated.astype(int) - frames[step].astype(int))[mask].mean())


@pytest.mark.parametrize("motion", ["rotate_cw", "rotate_ccw"])
def test_rotation_direction(motion):
    step = 3
    for clip in clips_with(motion):
        mask = object_mask(clip.frames)
        centre = tuple(np.argwhere(mask[0]).mean(axis=0))
        assert np.abs(np.argwhere(mask[-1]).mean(axis=0) - centre).max() < 1.0  # rotates in place
        degrees = clip.scene.rate * step
        clockwise, counter = rotation_error(clip.frames, centre, degrees, step), \
            rotation_error(clip.frames, centre, -degrees, step)
        assert (clockwise < counter) == (motion == "rotate_cw"), (clockwise, counter, clip.scene.main)


def test_still_is_still():
    for clip in clips_with("still"):
        assert all(np.array_equal(clip.frames[0], f) for f in clip.frames[1:])
    for clip in clips_with("left", count=1):
        assert not np.array_equal(clip.frames[0], clip.frames[-1])


def test_main_object_is_the_largest():
    config = SyntheticConfig(num_clips=200, max_distractors=2)
    for i in range(200):
        scene = make_scene(config, "train", i)
        final = scene.main.radius * (np.exp(scene.rate * (config.frames - 1)) if scene.motion == "zoom_in" else 1)
        assert all(d.radius < final for d in scene.distractors)
        assert all(d.colour != scene.main.colour for d in scene.distractors)


def test_caption_variety_and_content():
    config = SyntheticConfig(num_clips=600, motion_only_fraction=0.2)
    dataset = SyntheticVideoDataset(config)
    phrasings: dict[str, set[str]] = defaultdict(set)
    motion_only = 0
    for i in range(len(dataset)):
        scene = dataset.scene(i)
        caption = scene.caption
        used = [verb for verb, gerund in MOTION_PHRASES[scene.motion] if verb in caption or gerund in caption]
        assert used, caption
        phrasings[scene.motion].add(used[0])
        if scene.motion_only_caption:
            motion_only += 1
            assert not any(colour in caption for colour in COLOURS), caption
        else:
            assert scene.background.colour in caption and ("background" in caption or "backdrop" in caption)
    assert all(len(phrasings[m]) >= 4 for m in MOTIONS), {m: len(p) for m, p in phrasings.items()}
    assert motion_only / len(dataset) == pytest.approx(0.2, abs=0.06)
    assert len({dataset.scene(i).caption for i in range(len(dataset))}) > 0.9 * len(dataset)


def test_captions_name_the_colour_and_a_shape_synonym():
    config = SyntheticConfig(num_clips=100, motion_only_fraction=0.0)
    nouns_seen: dict[str, set[str]] = defaultdict(set)
    for i in range(100):
        scene = make_scene(config, "train", i)
        assert any(word in scene.caption for word in COLOUR_WORDS[scene.main.colour]), scene.caption
        assert any(noun in scene.caption for noun in SHAPE_NOUNS[scene.main.shape]), scene.caption
        assert re.match(r"^(an? |over |on |against |in front of )", scene.caption), scene.caption
        nouns_seen[scene.main.shape].update(n for n in SHAPE_NOUNS[scene.main.shape] if n in scene.caption)
    assert len(nouns_seen["square"]) >= 2 and len(set().union(*nouns_seen.values())) >= 15


def test_splits_are_disjoint_and_deterministic():
    config = SyntheticConfig(num_clips=300, held_out_fraction=0.2, seed=5)
    train, test = split_clip_ids(config, "train"), split_clip_ids(config, "test")
    assert len(train) == len(test) == 300 and not set(train.tolist()) & set(test.tolist())
    assert np.array_equal(train, split_clip_ids(config, "train"))
    assert 0.1 < 300 / test.max() < 0.3  # about held_out_fraction of the id space is held out
    small = split_clip_ids(SyntheticConfig(num_clips=20, held_out_fraction=0.2, seed=5), "test")
    assert np.array_equal(small, test[:20])
    with pytest.raises(ConfigError, match="held_out_fraction"):
        split_clip_ids(SyntheticConfig(num_clips=3, held_out_fraction=0.0), "test")


def test_held_out_combinations():
    combos = (("star", "green"), ("square", "red"))
    config = SyntheticConfig(num_clips=300, held_out_combos=combos)
    train = SyntheticVideoDataset(config, "train")
    test = SyntheticVideoDataset(config, "test")
    for dataset in (train, test):
        assert all((s.main.shape, s.main.colour) not in combos for s in map(dataset.scene, range(len(dataset))))
    novel = SyntheticVideoDataset(SyntheticConfig(num_clips=30, held_out_combos=combos), "novel")
    assert {(novel.scene(i).main.shape, novel.scene(i).main.colour) for i in range(30)} == set(combos)
    assert novel[0]["path"].startswith("synthetic://novel/")
    with pytest.raises(ConfigError, match="held_out_combos"):
        SyntheticVideoDataset(SyntheticConfig(num_clips=3), "novel")
    with pytest.raises(ConfigError, match="not a known"):
        SyntheticConfig(held_out_combos=(("blob", "red"),))


def test_config_validation():
    with pytest.raises(ConfigError, match="ambiguous"):
        SyntheticConfig(rotation_speed_range=(10.0, 40.0))
    with pytest.raises(ConfigError, match="motions"):
        SyntheticConfig(motions=("left", "jump"))
    only_left = SyntheticVideoDataset(SyntheticConfig(num_clips=10, motions=("left",)))
    assert {only_left.scene(i).motion for i in range(10)} == {"left"}


def test_writer_round_trip_through_the_video_dataset(tmp_path):
    config = SyntheticConfig(num_clips=3, seed=4)
    index = write_video_split(config, tmp_path, "train", progress=False)
    rows = read_table(index)
    assert [r["caption"] for r in rows] == [SyntheticVideoDataset(config)[i]["caption"] for i in range(3)]
    assert {"path", "caption", "fps", "motion", "shape", "colour", "background"} <= set(rows[0])
    memory = SyntheticVideoDataset(config)
    videos = VideoClipDataset(VideoDataConfig(index=str(index), video_length=16, frame_stride=1, random_fs=False,
                                              resolution=(64, 64)))
    for i in range(3):
        from_disk, rendered = videos[i], memory[i]
        assert from_disk["caption"] == rendered["caption"] and from_disk["fps"] == config.fps
        assert from_disk["frame_stride"] == 1 and from_disk["video"].shape == rendered["video"].shape
        assert (from_disk["video"] - rendered["video"]).abs().mean() < 0.03  # H.264 crf 10
    assert videos.skipped_count == 0
    mtime = (tmp_path / rows[0]["path"]).stat().st_mtime_ns
    write_video_split(config, tmp_path, "train", progress=False)  # re-run: existing videos are kept
    assert (tmp_path / rows[0]["path"]).stat().st_mtime_ns == mtime
    assert json.loads((tmp_path / "train_config.json").read_text())["seed"] == 4


def test_prompt_images_in_the_released_format(tmp_path):
    config = SyntheticConfig(num_clips=4, seed=2)
    prompts = write_prompt_images(config, tmp_path, "test", progress=False)
    images = sorted(p.name for p in tmp_path.glob("*.png"))
    lines = prompts.read_text().splitlines()
    labels = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert prompts.name == "test_prompts.txt" and len(images) == len(lines) == 4
    assert [entry["image"] for entry in labels] == images and [entry["caption"] for entry in labels] == lines
    dataset = SyntheticVideoDataset(config, "test")
    by_name = {f"test_{dataset.scene(i).clip_id:08d}.png": dataset.clip(i) for i in range(4)}
    for name, line in zip(images, lines):
        assert by_name[name].scene.caption == line
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / name)), by_name[name].frames[0])


def test_synth_cli(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", str(out), "--num-clips", "2", "--seed", "1", "--split", "test", "--size", "32x48",
                 "--frames", "6"]) == 0
    rows = read_table(out / "test.csv")
    assert len(rows) == 2 and all((out / r["path"]).is_file() for r in rows)
    assert len((out / "test_prompts" / "test_prompts.txt").read_text().splitlines()) == 2
    assert "2 test clips (32x48, 6 frames)" in capsys.readouterr().out
    assert main(["synth", str(out), "--num-clips", "1", "--size", "big"]) == 2
    assert "--size" in capsys.readouterr().err
    for command in ("synth", "annotate"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0 and "examples:" in capsys.readouterr().out


def test_render_scene_is_pure():
    config = SyntheticConfig(num_clips=1)
    scene = make_scene(config, "train", 0)
    assert np.array_equal(render_scene(scene, config), render_scene(scene, config))


def test_per_clip_frame_strides_scale_the_motion():
    from dynamicrafter.data.synthetic import SyntheticConfig, SyntheticVideoDataset, make_scene

    common = {"num_clips": 300, "seed": 3, "speed_range": (0.006, 0.013), "motions": ("left", "right", "up", "down")}
    base = SyntheticConfig(**common)
    strided = SyntheticConfig(**common, frame_strides=(1, 2, 3), rotation_speed_range=(3.0, 8.0))
    rates = {1: [], 2: [], 3: []}
    for clip_id in range(300):
        scene = make_scene(strided, "train", clip_id)
        rates[scene.frame_stride].append(scene.rate)
        assert make_scene(base, "train", clip_id).frame_stride == 1
    assert all(len(v) > 50 for v in rates.values())
    assert np.mean(rates[1]) < np.mean(rates[2]) < np.mean(rates[3])
    sample = SyntheticVideoDataset(strided, "train")[0]
    assert sample["frame_stride"] == sample["labels"]["frame_stride"] and sample["fps"] == 8 // sample["frame_stride"]


# ---------------------------------------------------------------------------------------------------------------
# Scene layouts: the released one (unchanged) and the centred one (no first-frame shortcut)
# ---------------------------------------------------------------------------------------------------------------

# sha256 (first 16 hex digits) of frames, caption and labels of the first training clips, recorded before the layout
# option existed: the released layout must keep rendering them byte for byte (the shipped model's data and caches)
RELEASED_HASHES = {"default, 40 clips": "9bdf74a3f9259d40", "recipe, 60 clips": "c70717269963d5f0"}


def _clips_hash(config: SyntheticConfig) -> str:
    import hashlib

    dataset = SyntheticVideoDataset(config, "train")
    digest = hashlib.sha256()
    for i in range(len(dataset)):
        clip = dataset.clip(i)
        digest.update(clip.frames.tobytes())
        digest.update(clip.scene.caption.encode())
        digest.update(repr(clip.scene.labels()).encode())
    return digest.hexdigest()[:16]


def test_the_released_layout_renders_the_same_clips_as_before():
    from dataclasses import asdict, replace

    from dynamicrafter.recipe.tiny import RECIPE_DATA

    assert SyntheticConfig().layout == "released"
    assert _clips_hash(SyntheticConfig(num_clips=40)) == RELEASED_HASHES["default, 40 clips"]
    assert _clips_hash(replace(RECIPE_DATA, num_clips=60)) == RELEASED_HASHES["recipe, 60 clips"]
    # its written config (data sets, latent caches) reads as before the layout fields existed
    written = RECIPE_DATA.to_dict()
    assert set(asdict(RECIPE_DATA)) - set(written) == {"layout", "latent_factor", "min_latent_travel"}
    assert SyntheticConfig(**written) == RECIPE_DATA


def _centred_scenes(count: int = 3000):
    from dataclasses import replace

    from dynamicrafter.recipe.tiny import CENTRED_DATA

    config = replace(CENTRED_DATA, num_clips=count)
    dataset = SyntheticVideoDataset(config, "train")
    return config, [dataset.scene(i) for i in range(len(dataset))]


def test_the_centred_layout_starts_every_motion_alike():
    from dynamicrafter.data.synthetic import CENTRED_BOX, CENTRED_RADIUS, ROTATION_SAFE_SHAPES

    config, scenes = _centred_scenes()
    s = config.short_side
    starts = np.array([(sc.main.x, sc.main.y, sc.main.radius) for sc in scenes])
    assert np.all(np.abs(starts[:, 0] - config.width / 2) <= CENTRED_BOX * s + 1e-9)
    assert np.all(np.abs(starts[:, 1] - config.height / 2) <= CENTRED_BOX * s + 1e-9)
    assert np.all((starts[:, 2] >= CENTRED_RADIUS[0] * s - 1e-9) & (starts[:, 2] <= CENTRED_RADIUS[1] * s + 1e-9))
    overall_mean, overall_std = starts.mean(0), starts.std(0)
    for motion in MOTIONS:
        picked = starts[[sc.motion == motion for sc in scenes]]
        assert len(picked) > 200
        # ~330 clips a motion: the standard error of a mean is ~0.06 std; every motion within 0.25 std of the rest
        assert np.all(np.abs(picked.mean(0) - overall_mean) < 0.25 * overall_std), motion
        assert np.all(np.abs(picked.std(0) - overall_std) < 0.2 * overall_std), motion
    assert {sc.main.shape for sc in scenes} == set(ROTATION_SAFE_SHAPES)  # the same shapes for every motion


def test_the_centred_layout_moves_every_clip_at_least_two_latent_pixels_inside_the_frame():
    from dynamicrafter.data.synthetic import SHAPE_EXTENT, motion_amount, object_trajectory

    config, scenes = _centred_scenes(1500)
    assert config.min_travel_px == 8.0  # 2 latent pixels at f = 4
    for sc in scenes:
        amount = motion_amount(sc.motion, sc.rate, sc.main.radius, config.frames)
        assert (amount == 0.0) if sc.motion == "still" else (amount >= config.min_travel_px - 1e-9), sc
        x, y, radius, _ = object_trajectory(sc.main, sc.motion, sc.rate, config.frames)
        reach = SHAPE_EXTENT * radius
        assert np.all(x - reach >= 0) and np.all(x + reach <= config.width), sc
        assert np.all(y - reach >= 0) and np.all(y + reach <= config.height), sc
    zooms = [np.exp(sc.rate * (config.frames - 1)) for sc in scenes if sc.motion == "zoom_in"]
    assert 1.5 <= min(zooms) and max(zooms) <= 1.8 + 1e-9  # zooms from mid size (x1.5-1.8 in)


def test_the_centred_layout_shows_each_motion():
    from dataclasses import replace

    from dynamicrafter.recipe.tiny import CENTRED_DATA

    config = replace(CENTRED_DATA, num_clips=60, max_distractors=0, frame_strides=(1,))
    dataset = SyntheticVideoDataset(config)
    for i in range(len(dataset)):
        clip = dataset.clip(i)
        mask = object_mask(clip.frames)
        if clip.scene.motion in ("left", "right", "up", "down"):
            first, last = np.nonzero(mask[0]), np.nonzero(mask[-1])  # (rows, columns) of the object's pixels
            dx, dy = last[1].mean() - first[1].mean(), last[0].mean() - first[0].mean()
            assert max(abs(dx), abs(dy)) >= 7.0, clip.scene  # the mask's centre moves about the travel
        elif clip.scene.motion.startswith("zoom"):
            growth = mask[-1].sum() / mask[0].sum()
            assert growth > 1.8 if clip.scene.motion == "zoom_in" else growth < 0.5, clip.scene


def test_the_centred_layout_refuses_what_it_cannot_show():
    from dataclasses import replace

    from dynamicrafter.recipe.tiny import CENTRED_DATA, RECIPE_DATA

    with pytest.raises(ConfigError, match="layout must be one of"):
        SyntheticConfig(layout="corner")
    with pytest.raises(ConfigError, match="turn does not survive"):
        replace(RECIPE_DATA, layout="centred")  # 32 px: objects too small to show a turn
    with pytest.raises(ConfigError, match="least motion of left"):
        replace(RECIPE_DATA, layout="centred", motions=("left", "still"))  # 32 px: no room for 8 px
    with pytest.raises(ConfigError, match="least motion"):
        replace(CENTRED_DATA, speed_range=(0.002, 0.004))
    with pytest.raises(ConfigError, match="held-out shapes circle"):
        replace(CENTRED_DATA, held_out_combos=(("circle", "red"),))
    relaxed = replace(RECIPE_DATA, layout="centred", motions=("left", "still"), min_latent_travel=1.0)
    assert relaxed.min_travel_px == 4.0


def test_synth_cli_writes_the_centred_layout(tmp_path, capsys):
    out = tmp_path / "centred"
    assert main(["synth", str(out), "--num-clips", "1", "--size", "64", "--layout", "centred", "--no-prompts"]) == 0
    assert json.loads((out / "train_config.json").read_text())["layout"] == "centred"
    assert main(["synth", str(out), "--num-clips", "1", "--size", "32", "--layout", "centred"]) == 2
    assert "turn does not survive" in capsys.readouterr().err
