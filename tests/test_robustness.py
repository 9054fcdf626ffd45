"""Bad inputs through the command line and the Python API: each is refused in one line (exit code 2 / UserError),
without a traceback, before any output is written; plus the inputs that must be accepted as diffusers users pass
them (numpy and tensor images, batches, lists, 16-bit grey, EXIF orientation, transparency)."""

from __future__ import annotations

import math
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dynamicrafter.checkpoint import read_state_dict
from dynamicrafter.cli import main
from dynamicrafter.config import config_for_tests
from dynamicrafter.errors import UserError
from dynamicrafter.media import MAX_IMAGE_PIXELS, image_input_to_tensor, load_image, save_video
from dynamicrafter.options import SamplingOptions
from dynamicrafter.pipeline import DynamiCrafterPipeline
from dynamicrafter.testing import random_image, tiny_checkpoint

T = config_for_tests().unet.temporal_length
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Inputs shared by the cases: good and bad images, checkpoints, prompt folders, scripts."""
    d = tmp_path_factory.mktemp("inputs")
    random_image(64, 64).save(d / "in.png")
    (d / "bad.png").write_bytes(b"not an image at all")
    _png_header_only(d / "huge.png", 20000, 20000)
    ckpt = tiny_checkpoint(d)
    data = ckpt.read_bytes()
    (d / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (d / "model.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))  # random bytes under a checkpoint's name
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": os.getcwd}, d / "code.ckpt")  # a pickle with code
    (d / "a_file").write_text("a file, not a folder")
    (d / "dir.mp4").mkdir()
    (d / "notes").mkdir()
    random_image(seed=1).save(d / "notes" / "img0.png")
    (d / "notes" / "a_notes.txt").write_text("these are my notes\n")
    (d / "story.yaml").write_text("shots:\n  - {image: in.png, colour: red}\n")
    return {"ckpt": ckpt, **{p.name: p for p in d.iterdir()}}


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header says ``width`` x ``height`` (pixel data absent): the size check must refuse it unread."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------------------------------------------
# The command line: (case, arguments after the command, expected part of the one-line error)
# ----------------------------------------------------------------------------------------------------------------

ANIMATE = ["animate", "{in.png}", "-p", "a cat", "-c", "{ckpt}", "-o", "{out}/video.mp4"]
CLI_CASES = [
    ("missing image", ["animate", "{out}/nope.png", "-p", "x", "-o", "{out}/v.mp4"], "input not found"),
    ("not an image", ["animate", "{bad.png}", "-p", "x", "-c", "{ckpt}", "-o", "{out}/v.mp4"], "not a readable image"),
    ("oversize image", ["animate", "{huge.png}", "-p", "x", "-c", "{ckpt}", "-o", "{out}/v.mp4"], "over the limit"),
    ("missing checkpoint", ANIMATE[:5] + ["{out}/none.ckpt", "-o", "{out}/v.mp4"], "checkpoint not found"),
    ("truncated checkpoint", ANIMATE[:5] + ["{truncated.ckpt}", "-o", "{out}/v.mp4"], "truncated or corrupt"),
    ("random bytes as model.ckpt", ANIMATE[:5] + ["{model.ckpt}", "-o", "{out}/v.mp4"], "is not a checkpoint"),
    ("pickle with code", ANIMATE[:5] + ["{code.ckpt}", "-o", "{out}/v.mp4"], "pickled Python objects"),
    ("config does not fit", ANIMATE + ["--config", "512"], "differs from config '512'"),
    ("steps 0", ANIMATE + ["--steps", "0"], "--steps must be a whole number in [1, 1000], got 0"),
    ("float steps", ANIMATE + ["--steps", "2.5"], "argument --steps: must be a whole number"),
    ("frames 0", ANIMATE + ["--frames", "0"], "--frames must be a whole number in [1, 4096]"),
    ("frames 1000 without windows", ANIMATE + ["--frames", "1000"], "1000 frames in one network call"),
    ("frame stride 0", ANIMATE + ["--frame-stride", "0"], "--frame-stride must be a whole number in [1, 1000]"),
    ("eta 1.5", ANIMATE + ["--eta", "1.5"], "--eta must be a finite number in [0, 1], got 1.5"),
    ("eta -0.1", ANIMATE + ["--eta", "-0.1"], "--eta must be a finite number in [0, 1]"),
    ("height 0", ANIMATE + ["--height", "0"], "--height must be a whole number in [1, 8192]"),
    ("height not a multiple", ANIMATE + ["--height", "30"], "height and width must be multiples of"),
    ("guidance scale nan", ANIMATE + ["--guidance-scale", "nan"], "--guidance-scale must be a finite number"),
    ("guidance scale inf", ANIMATE + ["--guidance-scale", "inf"], "--guidance-scale must be a finite number"),
    ("image guidance scale -inf", ANIMATE + ["--image-guidance-scale=-inf"], "--image-guidance-scale must be"),
    ("guidance rescale 2", ANIMATE + ["--guidance-rescale", "2"], "--guidance-rescale must be a finite number in"),
    ("lambda nan", ANIMATE + ["--image-attention-scale", "nan"], "must be a finite number >= 0"),
    ("lambda per group inf", ANIMATE + ["--image-attention-scale", "input=inf"], "must be a finite number >= 0"),
    ("lambda unknown group", ANIMATE + ["--image-attention-scale", "in=1"], "unknown layer group 'in'"),
    ("fps 0", ANIMATE + ["--fps", "0"], "argument --fps: must be a finite number of frames per second > 0"),
    ("fps negative", ANIMATE + ["--fps", "-8"], "argument --fps: must be a finite number"),
    ("fps nan", ANIMATE + ["--fps", "nan"], "argument --fps: must be a finite number"),
    ("seed -5", ANIMATE + ["--seed", "-5"], "--seed must be a whole number in [0, "),
    ("window x", ANIMATE + ["--window", "x"], "argument --window: must be a whole number"),
    ("window stride > window", ANIMATE + ["--window", "4", "--window-stride", "8"], "is larger than --window 4"),
    ("unknown sampler", ANIMATE + ["--sampler", "euler_x"], "argument --sampler: invalid choice"),
    ("unknown dtype", ANIMATE + ["--dtype", "fp64"], "argument --dtype: invalid choice"),
    ("device tpu", ANIMATE + ["--device", "tpu"], "unknown device 'tpu': use cpu, cuda or cuda:N"),
    ("device cuda without CUDA" if NO_CUDA else "device cuda:99",
     ANIMATE + ["--device", "cuda" if NO_CUDA else "cuda:99"],
     "this torch build has no CUDA support" if NO_CUDA and torch.version.cuda is None else "cuda"),
    ("output suffix .avi", ANIMATE[:-1] + ["{out}/video.avi"], "unsupported output"),
    ("output under a file", ANIMATE[:-1] + ["{a_file}/video.mp4"], "is a file, not a folder"),
    ("output in /proc", ANIMATE[:-1] + ["/proc/dynamicrafter-x/video.mp4"], "is not writable"),
    ("output .mp4 is a folder", ANIMATE[:-1] + ["{dir.mp4}"], "is a folder"),
    ("missing option -o", ANIMATE[:-2], "the following arguments are required: --output/-o"),
    ("prompts file for one image", ANIMATE + ["--prompts-file", "p.txt"], "--prompts-file is for a folder input"),
    ("folder: notes but no test_prompts.txt", ["animate", "{notes}", "-c", "{ckpt}", "-o", "{out}/res"],
     "no prompt file"),
    ("interpolate 1 keyframe", ["interpolate", "{in.png}", "-p", "x", "-c", "{ckpt}", "-o", "{out}/v.mp4"],
     "at least 2 keyframes"),
    ("loop unknown method", ["loop", "{in.png}", "-c", "{ckpt}", "-o", "{out}/v.gif", "--method", "spiral"],
     "invalid choice: 'spiral'"),
    ("story missing script", ["story", "{out}/none.yaml", "-o", "{out}/s.mp4"], "story script not found"),
    ("story unknown field", ["story", "{story.yaml}", "-o", "{out}/s.mp4"], "unknown field 'colour'"),
    ("story fps 0", ["story", "{story.yaml}", "-o", "{out}/s.mp4", "--fps", "0"], "argument --fps"),
    ("lambda plot not png", ["lambda", "{ckpt}", "-o", "{out}/l.jpg"], "--output must be a .png file"),
    ("train lr inf", ["train", "--stage", "iii", "--data", "synthetic:2", "--lr", "inf", "--run-dir", "{out}/run"],
     "argument --lr: must be a finite number, got 'inf'"),
    ("synth fraction nan", ["synth", "{out}/data", "--held-out-fraction", "nan"], "argument --held-out-fraction"),
]


def _argv(template: list[str], files: dict[str, Path], out: Path) -> list[str]:
    values = {name: str(path) for name, path in files.items()} | {"out": str(out)}
    return [re.sub(r"\{([^}]+)\}", lambda m: values[m.group(1)], part) for part in template]


@pytest.mark.parametrize("case,template,expected", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_in_one_line(case, template, expected, files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    before = sorted(p.name for p in files["in.png"].parent.iterdir())
    code = main(_argv(template, files, out))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    assert expected in err, err
    assert "weights_only=False" not in err
    assert list(out.iterdir()) == [], "an output file was left behind"
    assert sorted(p.name for p in files["in.png"].parent.iterdir()) == before


def test_cli_subprocess_refuses_nan_guidance_in_one_line(files, tmp_path):
    out = tmp_path / "video.mp4"
    result = subprocess.run([sys.executable, "-m", "dynamicrafter.cli", "animate", str(files["in.png"]), "-p", "x",
                             "-c", str(files["ckpt"]), "-o", str(out), "--guidance-scale", "nan"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --guidance-scale must be a finite number in [0, 100], got nan"
    assert not out.exists()


def test_cli_warns_about_half_precision_on_the_cpu_in_one_line(files, tmp_path, capsys):
    out = tmp_path / "video.gif"
    assert main(_argv(ANIMATE[:-1], files, tmp_path) + [str(out), "--dtype", "fp16", "--steps", "1"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "fp16 on the CPU is slower than fp32" in warnings[0]
    assert out.is_file()


# ----------------------------------------------------------------------------------------------------------------
# Folder mode
# ----------------------------------------------------------------------------------------------------------------


def test_folder_mode_reads_test_prompts_lists_skips_reads_webp_and_redoes_incomplete(files, tmp_path, capsys):
    folder = tmp_path / "prompts"
    folder.mkdir()
    random_image(seed=2).save(folder / "a.webp")
    random_image(seed=3).save(folder / "b.png")
    random_image(seed=4).save(folder / "c.jpg")  # beyond the prompts: listed and skipped
    (folder / "a_notes.txt").write_text("these are my notes\n")
    (folder / "test_prompts.txt").write_text("a boat\na dog\n")
    out = tmp_path / "res"
    (out / "b").mkdir(parents=True)  # a half-written PNG folder of an earlier run: 1 of T frames
    random_image(seed=5).save(out / "b" / "0000.png")
    args = ["animate", str(folder), "-c", str(files["ckpt"]), "-o", str(out), "--format", "png", "--steps", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "skipping 2 file(s)" in printed and "a_notes.txt" in printed and "c.jpg" in printed
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]  # no temporary folder left
    assert [len(list((out / name).glob("*.png"))) for name in ("a", "b")] == [T, T]
    assert main(args) == 0
    assert "2 of 2 videos already exist" in capsys.readouterr().out
    assert main(args + ["--prompts-file", str(folder / "a_notes.txt")]) == 0  # a named prompt file: one prompt
    assert "1 of 1 videos already exist" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------------
# The Python API
# ----------------------------------------------------------------------------------------------------------------


IMAGE = random_image(64, 64)
API_CASES = [
    ("guidance scale nan", {"guidance_scale": math.nan}, "guidance_scale must be a finite number"),
    ("guidance scale inf", {"guidance_scale": math.inf}, "guidance_scale must be a finite number"),
    ("lambda nan", {"image_attention_scale": math.nan}, "must be a finite number >= 0"),
    ("lambda per group nan", {"image_attention_scale": {"input": math.nan}}, "must be a finite number >= 0"),
    ("float steps", {"num_inference_steps": 2.5}, "num_inference_steps must be a whole number"),
    ("steps 0", {"num_inference_steps": 0}, "num_inference_steps must be a whole number in [1, 1000]"),
    ("frames 1000", {"num_frames": 1000}, "1000 frames in one network call"),
    ("eta 2", {"eta": 2.0}, "eta must be a finite number in [0, 1]"),
    ("frame stride 0", {"frame_stride": 0}, "frame_stride must be a whole number"),
    ("height not a multiple", {"height": 30}, "multiples of"),
    ("int prompt", {"prompt": 5}, "prompt must be a string or a list of strings, got int 5"),
    ("list with an int prompt", {"prompt": ["a", 1]}, "prompt must be a string or a list of strings"),
    ("int image", {"image": 7}, "image must be a file path, a PIL image, a numpy array or a tensor"),
    ("float array out of [0, 1]", {"image": np.full((32, 32, 3), 2.0)}, "float image arrays must hold values in"),
    ("array of 2 channels", {"image": np.zeros((32, 32, 2), np.uint8)}, "image arrays must be (H, W, 3)"),
    ("tensor of 2 channels", {"image": torch.zeros(2, 32, 32)}, "image tensors must be (3, H, W)"),
    ("tensor with nan", {"image": torch.full((3, 32, 32), math.nan)}, "NaN or infinite"),
    ("missing image file", {"image": "nope/missing.png"}, "image file not found"),
    ("output type gif", {"output_type": "gif"}, "output_type must be one of"),
    ("negative prompt int", {"negative_prompt": 3}, "negative_prompt must be a string"),
]


@pytest.mark.parametrize("case,kwargs,expected", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_refuses_in_one_line(case, kwargs, expected, pipe):
    call = {"image": IMAGE, "prompt": "a cat", "num_inference_steps": 1} | kwargs
    with pytest.raises(UserError) as e:
        pipe(call.pop("image"), call.pop("prompt"), **call)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_api_refuses_files_devices_and_settings_in_one_line(files, tmp_path):
    checks = [
        (lambda: load_image(files["huge.png"]), "over the limit"),
        (lambda: load_image(files["bad.png"]), "not a readable image"),
        (lambda: read_state_dict(files["model.ckpt"]), "is not a checkpoint"),
        (lambda: read_state_dict(files["code.ckpt"]), "pickled Python objects (it refers to posix.getcwd)"),
        (lambda: DynamiCrafterPipeline.from_checkpoint(files["ckpt"], device="tpu"), "unknown device 'tpu'"),
        (lambda: SamplingOptions(guidance_scale=math.inf), "guidance_scale must be a finite number"),
        (lambda: SamplingOptions.from_settings({"steps": 2.5}), "steps must be a whole number"),
        (lambda: save_video(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "v.gif", fps=0), "fps must be"),
    ]
    if NO_CUDA:
        checks.append((lambda: DynamiCrafterPipeline.from_checkpoint(files["ckpt"], device="cuda"), "not available"))
    for check, expected in checks:
        with pytest.raises(UserError) as e:
            check()
        assert expected in str(e.value) and "\n" not in str(e.value) and "weights_only=False" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
    assert MAX_IMAGE_PIXELS < 20000 * 20000


# ----------------------------------------------------------------------------------------------------------------
# Inputs that must be accepted
# ----------------------------------------------------------------------------------------------------------------


def _pixels(pipe, image) -> torch.Tensor:
    """The conditioning pixels the pipeline makes of ``image`` (b, 3, 64, 64)."""
    options = pipe.resolve_options()
    return pipe.prepare_inputs(image, "x", None, None, options, _no_precomputed()).pixels


def _no_precomputed():
    from dynamicrafter.pipeline import Precomputed

    return Precomputed()


def test_api_accepts_numpy_tensors_batches_and_lists_as_diffusers_does(pipe):
    array = np.asarray(IMAGE)  # (H, W, 3) uint8
    reference = _pixels(pipe, IMAGE)
    assert reference.shape == (1, 3, 64, 64)
    assert torch.equal(_pixels(pipe, array), reference)
    assert torch.equal(_pixels(pipe, array.astype(np.float32) / 255.0), reference)  # floats in [0, 1]
    assert torch.equal(_pixels(pipe, reference), reference)  # (1, 3, H, W) tensor in [-1, 1]
    assert torch.equal(_pixels(pipe, reference[0]), reference)  # (3, H, W)
    other = random_image(64, 64, seed=9)
    both = _pixels(pipe, [IMAGE, np.asarray(other)])  # a list of mixed inputs: a batch of 2
    assert both.shape == (2, 3, 64, 64) and torch.equal(both[:1], reference)
    assert torch.equal(both[1:], _pixels(pipe, other))
    out = pipe([array, reference[0]], ["a cat", "a dog"], num_inference_steps=1, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (2, T, 64, 64, 3) and np.isfinite(out.frames).all()


def test_image_files_16_bit_grey_exif_and_transparency(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    grey = np.asarray(load_image(tmp_path / "grey16.png"))
    expected = np.clip(ramp / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert grey.shape == (64, 64, 3) and np.array_equal(grey[..., 0], expected)  # a ramp, not a white image
    assert 100 < grey.mean() < 155

    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(wide).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = np.asarray(load_image(tmp_path / "rotated.jpg"))
    assert upright.shape == (40, 20, 3)  # turned upright: portrait
    assert upright[:15].mean() > 200 and upright[25:].mean() < 50  # the white half is now on top

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:, :4, 3] = 0  # left: fully transparent -> the white background
    rgba[:, 4:, 3] = 128  # right: half transparent red over white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    rgb = np.asarray(load_image(tmp_path / "alpha.png")).astype(int)
    assert (rgb[:, :4] == 255).all()
    assert (rgb[:, 4:, 0] == 255).all() and (abs(rgb[:, 4:, 1:] - 127) <= 1).all()
    tensor = image_input_to_tensor(tmp_path / "grey16.png", 64, 64)  # the same path through the pipeline's reader
    assert tensor.shape == (3, 64, 64) and tensor.min() < -0.9 and tensor.max() > 0.9


def test_ui_service_reads_16_bit_grey_and_refuses_oversize_in_one_line(files, tmp_path):
    from dynamicrafter.ui.config import UIConfig
    from dynamicrafter.ui.inputs import check_image, check_settings, controls_for

    ramp = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    config = UIConfig()
    assert check_image(str(tmp_path / "grey16.png"), "image", config).width == 32
    with pytest.raises(UserError) as e:
        check_image(str(files["huge.png"]), "image", config)
    assert "pixels" in str(e.value) and "\n" not in str(e.value)
    controls = controls_for(config_for_tests(), config)
    values = {name: controls[name].default for name in controls}
    with pytest.raises(UserError, match="guidance_scale must be a number"):
        check_settings(values | {"guidance_scale": math.nan}, controls, 1, False)
