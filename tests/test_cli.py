import subprocess
import sys

import pytest

from dynamicrafter.cli import COMMANDS, build_parser, main
from dynamicrafter.cli.options import NOT_FLAGS, sampling_options
from dynamicrafter.media import read_video_frames
from dynamicrafter.options import SETTINGS, SamplingOptions, TemporalWindows
from dynamicrafter.testing import random_image, tiny_checkpoint


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


HEAVY = ("gradio", "lightning", "diffusers", "transformers", "cv2", "scipy")
# their parsers show defaults read from modules that import torch (the data set and metric code)
TORCH_AT_HELP = ("annotate", "synth", "evaluate", "benchmark", "convert-dreamsim")
HELP_CODE = """import sys
from dynamicrafter.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})), file=sys.stderr)
"""


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_imports_no_heavy_stack(command):
    """`dynamicrafter --help` and `dynamicrafter COMMAND --help` import none of the heavy libraries (a command
    imports what it runs when it runs), and torch only where a parser reads its defaults from torch modules."""
    argv = [command, "--help"] if command else ["--help"]
    result = subprocess.run([sys.executable, "-c", HELP_CODE, *argv], capture_output=True, text=True, check=True,
                            timeout=600)
    imported = set(result.stderr.split())
    assert result.stdout.startswith("usage: dynamicrafter")
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
    if command not in TORCH_AT_HELP:
        assert "torch" not in imported


def test_sampling_flags_are_made_from_the_settings_table():
    parser = build_parser(["animate"])
    animate = parser._subparsers._group_actions[0].choices["animate"]  # type: ignore[union-attr]
    flags = {flag for action in animate._actions for flag in action.option_strings}
    expected = {f"--{s.name.replace('_', '-')}" for s in SETTINGS if s.name not in NOT_FLAGS}
    assert expected <= flags and {"--fs", "--no-vdg", "--no-context-stream", "--seed"} <= flags
    args = parser.parse_args(["animate", "x.png", "-o", "o.mp4", "--steps", "25", "--fs", "5", "--guidance-scale",
                              "5", "--no-vdg", "--window", "--window-stride", "4", "--sampler", "ddim",
                              "--timestep-spacing", "uniform", "--image-attention-scale", "input=0.5", "--resize",
                              "cover", "--eta", "0"])
    assert sampling_options(args) == SamplingOptions(
        num_inference_steps=25, frame_stride=5, guidance_scale=5.0, vdg=False, sampler="ddim", eta=0.0,
        temporal_windows=TemporalWindows(None, 4), timestep_spacing="uniform", image_attention_scale={"input": 0.5},
        resize_mode="cover")
    assert sampling_options(parser.parse_args(["animate", "x.png", "-o", "o.mp4"])) == SamplingOptions()


def test_compile_flag_compiles_the_unet(monkeypatch, tmp_path, checkpoint):
    """--compile reaches DynamiCrafterPipeline.enable_compile on every generating command (inductor replaced by the
    fast "eager" backend here; the benchmark measures the real one)."""
    from dynamicrafter.pipeline import DynamiCrafterPipeline

    compiled = []
    plain = DynamiCrafterPipeline.enable_compile
    monkeypatch.setattr(DynamiCrafterPipeline, "enable_compile",
                        lambda self: compiled.append(plain(self, backend="eager")) or None)
    parser = build_parser()
    for argv in (["animate", "x.png", "-o", "y.gif"], ["interpolate", "a.png", "b.png", "-o", "y.gif"],
                 ["loop", "x.png", "-o", "y.gif"], ["story", "s.yaml", "-o", "x.mp4"], ["benchmark", "-o", "out"]):
        assert parser.parse_args([*argv, "--compile"]).compile, argv[0]
    random_image().save(tmp_path / "in.png")
    assert main(["animate", str(tmp_path / "in.png"), "-p", "a ball", "-c", str(checkpoint), "-o",
                 str(tmp_path / "o.gif"), "--steps", "1", "--compile"]) == 0
    assert len(compiled) == 1
