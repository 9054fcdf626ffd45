import subprocess
import sys

import pytest

from dynamicrafter.cli import main
from dynamicrafter.media import read_video_frames
from helpers import random_image, tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_animate_writes_video_with_expected_frames(tmp_path, checkpoint, capsys):
    random_image().save(tmp_path / "in.png")
    out = tmp_path / "out.mp4"
    code = main(["animate", str(tmp_path / "in.png"), "-p", "a red square moves left", "-c", str(checkpoint),
                 "-o", str(out), "--steps", "2", "--seed", "7"])
    assert code == 0
    assert read_video_frames(out).shape == (4, 64, 64, 3)
    assert "saved" in capsys.readouterr().out


def test_animate_folder_mode_resumes(tmp_path, checkpoint, capsys):
    folder = tmp_path / "prompts"
    folder.mkdir()
    for i in range(2):
        random_image(seed=i).save(folder / f"img{i}.png")
    (folder / "test_prompts.txt").write_text("a cat\na dog\n")
    args = ["animate", str(folder), "-c", str(checkpoint), "-o", str(tmp_path / "res"), "--steps", "1",
            "--format", "gif"]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["img0.gif", "img1.gif"]
    capsys.readouterr()
    assert main(args) == 0
    assert "2 of 2 videos already exist" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, checkpoint, capsys):
    (tmp_path / "bad.png").write_bytes(b"nope")
    assert main(["animate", str(tmp_path / "bad.png"), "-c", str(checkpoint), "-o", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not a readable image" in err and "\n" not in err
    random_image().save(tmp_path / "in.png")
    assert main(["animate", str(tmp_path / "in.png"), "-c", str(checkpoint), "-o", str(tmp_path / "o.avi")]) == 2
    assert "unsupported output" in capsys.readouterr().err
    assert main(["animate", str(tmp_path / "in.png"), "-c", str(checkpoint), "--config", "512",
                 "-o", str(tmp_path / "o.mp4")]) == 2
    assert "differs from config '512'" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "dynamicrafter.cli", "animate", "--help"], capture_output=True,
                            text=True, check=True)
    assert "--frame-stride" in result.stdout and "examples:" in result.stdout


def test_inspect(checkpoint, capsys):
    assert main(["inspect", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "model: test_size" in out and "unet" in out
