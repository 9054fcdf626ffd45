"""Applications on the command line: interpolate, loop, story (+ sidecar re-render), lambda, animate controls."""

import json
import math

import numpy as np
import pytest
import yaml
from PIL import Image

from dynamicrafter.cli import main
from dynamicrafter.config import config_for_tests
from dynamicrafter.media import read_video_frames
from dynamicrafter.testing import random_model, tiny_checkpoint

T = config_for_tests().unet.temporal_length
FAST = ["--steps", "2", "--height", "32", "--width", "32"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def keyframes(images):
    """The shared random images as command-line arguments."""
    return [str(path) for path in images]


def test_interpolate_three_keyframes_with_a_prompt_per_segment(tmp_path, checkpoint, keyframes, capsys):
    out = tmp_path / "chain"
    assert main(["interpolate", *keyframes, "-p", "a", "-p", "b", "-c", str(checkpoint), "-o", str(out), *FAST]) == 0
    frames = read_video_frames(out)
    assert frames.shape == (2 * T - 1, 32, 32, 3)
    assert f"({2 * T - 1} frames)" in capsys.readouterr().out
    (tmp_path / "p.txt").write_text("a\nb\nc\n")
    assert main(["interpolate", *keyframes, "--prompts-file", str(tmp_path / "p.txt"), "-c", str(checkpoint),
                 "-o", str(tmp_path / "x.mp4")]) == 2
    assert "got 3 prompts for 3 keyframes" in capsys.readouterr().err


def test_loop_methods_write_their_frame_counts(tmp_path, checkpoint, keyframes, capsys):
    out = tmp_path / "loop.gif"
    counts = {(): T, ("--method", "ring", "--keep-last-frame"): T + 1, ("--method", "closed"): T - 1,
              ("--method", "open", "--keep-last-frame"): T}
    for options, frames in counts.items():
        assert main(["loop", keyframes[0], "-p", "waves", "-c", str(checkpoint), "-o", str(out), *options, *FAST]) == 0
        assert read_video_frames(out).shape[0] == frames, options
    assert main(["loop", keyframes[0], "-c", str(checkpoint), "-o", str(out), "--method", "spiral"]) == 2
    assert "invalid choice: 'spiral'" in capsys.readouterr().err


def test_animate_long_video_with_windows_and_stream_controls(tmp_path, checkpoint, keyframes, capsys):
    out = tmp_path / "long"
    assert main(["animate", keyframes[0], "-p", "x", "-c", str(checkpoint), "-o", str(out), "--frames", "8",
                 "--window", "--window-stride", "2", "--no-vdg", "--image-attention-scale", "input=0.5,output=0",
                 "--steps", "1", "--height", "32", "--width", "32"]) == 0
    assert read_video_frames(out).shape[0] == 8
    assert main(["animate", keyframes[0], "-c", str(checkpoint), "-o", str(out), "--window", "x"]) == 2
    assert "argument --window: must be a whole number in [1, 4096], got 'x'" in capsys.readouterr().err
    assert main(["animate", keyframes[0], "-c", str(checkpoint), "-o", str(out),
                 "--image-attention-scale", "in=1"]) == 2
    assert "unknown layer group 'in'" in capsys.readouterr().err


def test_story_sidecar_rerenders_shot_2_bit_identically(tmp_path, checkpoint, keyframes, capsys):
    script = tmp_path / "story.yaml"
    script.write_text(yaml.safe_dump({
        "crossfade": 1, "height": 32, "width": 32, "defaults": {"steps": 2},
        "shots": [{"image": keyframes[0], "prompt": "a bear walks"},
                  {"image": keyframes[1], "prompt": "a boat sails", "frame_stride": 2}],
    }))
    out = tmp_path / "story"
    assert main(["story", str(script), "-c", str(checkpoint), "-o", str(out)]) == 0
    video = read_video_frames(out)
    assert video.shape[0] == 2 * T - 1
    side = json.loads((tmp_path / "story.story.json").read_text())
    assert side["model"]["name"] == "test_size" and len(side["model"]["fingerprint"]) == 64
    shot2 = side["shots"][1]
    assert (shot2["seed"], shot2["frames"], shot2["frame_stride"], shot2["steps"]) == (124, T, 2, 2)
    assert shot2["frame_range"] == [T - 1, 2 * T - 1] and shot2["image"] == keyframes[1]
    capsys.readouterr()

    alone = tmp_path / "shot2"
    assert main(["story", str(tmp_path / "story.story.json"), "--shot", "2", "-o", str(alone)]) == 0
    assert "warning" not in capsys.readouterr().out
    frames = read_video_frames(alone)
    assert frames.shape[0] == T
    np.testing.assert_array_equal(frames[1:], video[T:])  # all but the cross-faded first frame
    assert main(["story", str(tmp_path / "story.story.json"), "--shot", "3", "-o", str(alone)]) == 2
    assert "--shot 3 is out of range" in capsys.readouterr().err


def test_bad_story_script_is_a_one_line_error(tmp_path, checkpoint, keyframes, capsys):
    script = tmp_path / "bad.json"
    script.write_text(json.dumps({"shots": [{"image": keyframes[0]}, {"prompt": "no image"}]}))
    assert main(["story", str(script), "-c", str(checkpoint), "-o", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: bad.json: shot 2: 'image' is required (the path of the shot's first frame)"


def test_lambda_prints_and_plots_the_learned_values(tmp_path, checkpoint, capsys):
    png = tmp_path / "lambda.png"
    assert main(["lambda", str(checkpoint), "-o", str(png)]) == 0
    out = capsys.readouterr().out
    expected = random_model(config_for_tests()).unet.image_attention_lambdas()
    assert "learned lambda" in out and len(expected) == 7
    for name, value in expected.items():
        line = next(line for line in out.splitlines() if f" {name} " in line)
        assert math.isclose(float(line.split()[-1]), value, abs_tol=1e-4)
    assert "frame stride" in out
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] >= 480


def test_lambda_without_learned_gate_prints_the_fixed_scale(tmp_path, capsys):
    path = tiny_checkpoint(tmp_path, config_for_tests(learnable_lambda=False), name="fixed.safetensors")
    assert main(["lambda", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no learned lambda gate; lambda is the fixed scale 1 in all 7 layers" in out
