"""Options shared by the commands: the model options, the sampling flags, output paths, seeds and pipeline loading.

The sampling flags are generated from :data:`dynamicrafter.options.SETTINGS` (flag ``--name-with-dashes``; kind,
choices and help from the table) and read back by :func:`sampling_options` through
:meth:`SamplingOptions.from_settings`, so every range is checked in one place. Nothing here imports torch: the
pipeline is imported when a command loads it.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dynamicrafter.errors import UserError
from dynamicrafter.options import DEFAULT_SEED, SEED_MAX, SETTINGS, SETTINGS_BY_NAME, SamplingOptions, Setting

VIDEO_SUFFIXES = (".mp4", ".gif", ".webp")  # the formats media.save_video writes; no suffix: a folder of PNG frames
FLAG_ALIASES: dict[str, tuple[str, ...]] = {"frame_stride": ("--fs",)}
NOT_FLAGS = ("loop", "loop_method", "seed")  # set by the loop command (--method); --seed has its own meaning of -1
STREAM_SETTINGS = ("image_attention_scale", "context_stream", "vdg", "window", "window_stride", "window_weighting")
SEED_HELP = f"random seed (default {DEFAULT_SEED}, as released; -1: a random seed, printed)"


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------


def add_model_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--checkpoint", "-c", help="released model.ckpt / .safetensors, or the project's own; default: "
                   "$DYNAMICRAFTER_CHECKPOINT, else the built-in small model")
    g.add_argument("--config", help="preset (256, 512, 1024, 512_interp) or a released YAML; default: detected")
    g.add_argument("--text-encoder", help="separate CLIP text tower (for repacks without cond_stage_model.*)")
    g.add_argument("--image-encoder", help="separate CLIP image tower (OpenCLIP ViT-H-14 weights)")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    g.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                   help="weights dtype (auto: fp32 on CPU, bf16 on CUDA; fp16 / bf16 are much slower on a CPU)")
    g.add_argument("--lora", action="append", default=None, metavar="FILE[:SCALE]",
                   help="apply a LoRA adapter (dynamicrafter train --lora) at SCALE (default 1); repeatable")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the U-Net: the first step compiles (minutes), later steps are faster "
                   "(released 256 on a 2-core CPU: 0.87x the time per step); worth it for many steps")


def load_pipeline(args: argparse.Namespace) -> Any:
    """The pipeline of the model options (imports torch and the networks)."""
    from dynamicrafter.pipeline import DynamiCrafterPipeline
    from dynamicrafter.utils import resolve_device

    t0 = time.perf_counter()
    on_cpu = resolve_device(args.device).type == "cpu"
    pipe = DynamiCrafterPipeline.from_checkpoint(args.checkpoint, config=args.config, device=args.device,
                                                 dtype=args.dtype, text_encoder_path=args.text_encoder,
                                                 image_encoder_path=args.image_encoder,
                                                 low_memory=on_cpu)  # CLIP towers loaded per call, chunked decode
    print(f"loaded model '{pipe.config.name}' on {pipe.device} ({str(pipe.dtype).removeprefix('torch.')}) "
          f"in {time.perf_counter() - t0:.1f}s")
    from dynamicrafter.lora import load_lora_options

    load_lora_options(pipe, getattr(args, "lora", None))
    if getattr(args, "compile", False):
        pipe.enable_compile()
    return pipe


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------


def add_sampling_options(parser: argparse.ArgumentParser, multiple_prompts: bool = False) -> None:
    """The prompts, one flag per sampling setting of :data:`SETTINGS` and ``--seed``.

    ``multiple_prompts``: ``--prompt`` may be repeated (a list, e.g. one prompt per interpolation segment).
    """
    g = parser.add_argument_group("sampling (defaults: the released settings of the loaded model)")
    if multiple_prompts:
        g.add_argument("--prompt", "-p", action="append", default=None,
                       help="text prompt; repeat it for one prompt per segment")
    else:
        g.add_argument("--prompt", "-p", default=None, help="text prompt (motion and scene)")
    g.add_argument("--negative-prompt", default=None, help="replaces the empty prompt of the unconditional branch")
    streams = parser.add_argument_group("conditioning streams and long videos")
    for setting in SETTINGS:
        if setting.name not in NOT_FLAGS:
            _add_setting_flag(streams if setting.name in STREAM_SETTINGS else g, setting)
    g.add_argument("--seed", type=_number_type(SETTINGS_BY_NAME["seed"]), default=DEFAULT_SEED, help=SEED_HELP)


def _add_setting_flag(group: argparse._ArgumentGroup, setting: Setting) -> None:
    """``--name-with-dashes`` for one setting; unset flags are None (the setting's default)."""
    flags = (f"--{setting.name.replace('_', '-')}", *FLAG_ALIASES.get(setting.name, ()))
    accepted = f" [{setting.accepted()}]" if setting.kind in (int, float) else ""
    kwargs: dict[str, Any] = {"dest": setting.name, "default": None, "help": setting.help + accepted}
    if setting.kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif setting.choices is not None:
        kwargs["choices"] = list(setting.choices)
    elif setting.name == "image_attention_scale":  # a number, or NAME=NUMBER pairs
        kwargs["metavar"] = "S"
    else:
        kwargs["type"] = _number_type(setting)
    if setting.name == "window":  # --window alone (or --window auto): the model's temporal length
        number = kwargs["type"]
        kwargs.update(nargs="?", const="auto", metavar="N", type=lambda text: text if text == "auto" else number(text))
    group.add_argument(*flags, **kwargs)


def _number_type(setting: Setting) -> Callable[[str], int | float]:
    """The argparse type of a number setting: the text as int / float (the range is checked by SamplingOptions)."""

    def convert(text: str) -> int | float:
        try:
            value = float(text)
            if setting.kind is int:
                if not value.is_integer():
                    raise ValueError(text)
                return int(value)
            return value
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"must be {setting.accepted()}, got {text!r}") from None

    convert.__name__ = setting.kind.__name__
    return convert


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    """The sampling options of the flags (unset flags: the model's released settings); checked in one line."""
    settings = {s.name: getattr(args, s.name) for s in SETTINGS if s.name not in NOT_FLAGS and hasattr(args, s.name)}
    return SamplingOptions.from_settings(settings, style="flag")


def resolve_seed(seed: int) -> int:
    """``--seed``: -1 draws a random seed (printed), anything else must be in the seed range."""
    if seed == -1:
        seed = random.randrange(2**31)
        print(f"seed: {seed}")
    if not 0 <= seed <= SEED_MAX:
        raise UserError(f"--seed must be a whole number in [0, {SEED_MAX}] or -1 (a random seed), got {seed}")
    return seed


def generator_for(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------


def add_output_options(parser: argparse.ArgumentParser, output_help: str) -> None:
    parser.add_argument("--output", "-o", required=True, help=output_help)
    parser.add_argument("--fps", type=positive_fps, help="frame rate of the written video (default: 8, as released)")


def finite_float(text: str) -> float:
    """argparse type of a float option: a finite number (ranges are checked where the option is used)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_fps(text: str) -> float:
    """argparse type of ``--fps``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of frames per second > 0, got {text!r}")
    return value


def check_output_path(path: str | os.PathLike) -> Path:
    """An output video (.mp4 / .gif / .webp) or PNG-frame folder (no suffix) that can be written, checked before
    any work: a supported suffix, not a folder in place of a file (or the reverse), in a folder that can be made
    and written to."""
    path = Path(path)
    if path.suffix.lower() not in (*VIDEO_SUFFIXES, ""):
        raise UserError(f"unsupported output '{path}': use .mp4, .gif, .webp or a folder name (PNG frames)")
    if path.suffix and path.is_dir():
        raise UserError(f"output '{path}' is a folder: give a video file name, or a name without suffix for PNGs")
    if not path.suffix and path.is_file():
        raise UserError(f"output '{path}' is a file, but a name without suffix means a folder of PNG frames: add "
                        f".mp4, .gif or .webp")
    check_writable_folder(path.parent, path)
    return path


def check_writable_folder(folder: str | os.PathLike, target: str | os.PathLike | None = None) -> None:
    """Files can be written in ``folder`` (made when missing): probed with a temporary file in the nearest folder
    that exists, which is removed again. ``target`` names what is to be written, in messages."""
    folder = Path(folder)
    what = f"'{target}'" if target is not None else f"to '{folder}'"
    existing = folder.absolute()
    while not _exists(existing):
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write {what}: '{existing}' is a file, not a folder; choose another output path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".dynamicrafter-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write {what}: folder '{existing}' is not writable ({e.strerror}); choose another "
                        f"output path") from None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. no permission to look inside the parent: try the parent
        return False
