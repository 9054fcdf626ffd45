"""Checks of what a user sends to the app: uploaded images and the values of the sampling controls.

Everything here is independent of Gradio; problems raise :class:`dynamicrafter.errors.UserError` with a one-line
message that the app shows in the page.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from dynamicrafter.apps.lambdas import motion_controls
from dynamicrafter.config import ModelConfig
from dynamicrafter.errors import UserError
from dynamicrafter.media import MediaError, load_image
from dynamicrafter.options import SamplingOptions
from dynamicrafter.ui.config import UIConfig

SEED_MAX = 2**31 - 1
IMAGE_FORMATS = "PNG, JPEG, WebP or BMP"


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedImage:
    path: Path
    name: str  # the file name the user uploaded (for messages)
    width: int
    height: int


def upload_path(value: Any) -> tuple[Path, str] | None:
    """The file of an upload: a path, or Gradio's file payload (a mapping with ``path`` and ``orig_name``)."""
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        if not value.get("path"):
            return None
        path = Path(str(value["path"]))
        return path, str(value.get("orig_name") or path.name)
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        return path, path.name
    raise UserError(f"expected an image file, got {type(value).__name__}")


def check_image(value: Any, what: str, config: UIConfig) -> CheckedImage:
    """An uploaded image that can be read, within the byte and pixel limits; ``what`` names it in messages."""
    found = upload_path(value)
    if found is None:
        raise UserError(f"{what}: no image given; upload a {IMAGE_FORMATS} file")
    path, name = found
    if not path.is_file():
        raise UserError(f"{what}: the uploaded file '{name}' is gone; upload it again")
    size = path.stat().st_size
    if size > config.max_image_bytes:
        limit = _megabytes(config.max_image_bytes)
        raise UserError(f"{what} '{name}' is {_megabytes(size)}, over the limit of {limit} (server option "
                        f"--max-image-bytes)")
    try:
        with Image.open(path) as im:  # reads the header only
            width, height = im.size
    except Image.DecompressionBombError:  # Pillow's own limit (about 179 megapixels) applies as well
        raise UserError(f"{what} '{name}' has too many pixels (over {config.max_image_pixels:,}; server option "
                        f"--max-image-pixels)") from None
    except (UnidentifiedImageError, OSError):
        raise UserError(f"{what} '{name}' is not an image; upload a {IMAGE_FORMATS} file") from None
    if width * height > config.max_image_pixels:
        raise UserError(f"{what} '{name}' is {width}x{height} = {width * height:,} pixels, over the limit of "
                        f"{config.max_image_pixels:,} (server option --max-image-pixels)")
    try:
        load_image(path)  # decodes every pixel: finds truncated and corrupt files
    except MediaError:
        raise UserError(f"{what} '{name}' is corrupt or truncated and cannot be decoded; upload a valid "
                        f"{IMAGE_FORMATS} file") from None
    return CheckedImage(path, name, width, height)


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


# ----------------------------------------------------------------------------------------------------------------
# Sampling controls
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Control:
    """A numeric control: its label, valid range, default and step (the slider and the check use the same)."""

    label: str
    minimum: float
    maximum: float
    default: float
    step: float
    integer: bool
    info: str = ""

    def check(self, value: Any, name: str) -> float | int:
        """``value`` as an int or float inside ``[minimum, maximum]``; anything else is refused."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{name} must be a number in [{self.minimum:g}, {self.maximum:g}], got {value!r}")
        if self.integer and value != int(value):
            raise UserError(f"{name} must be a whole number in [{self.minimum:g}, {self.maximum:g}], got {value!r}")
        if not self.minimum <= value <= self.maximum:
            raise UserError(f"{name} must be in [{self.minimum:g}, {self.maximum:g}], got {value:g}")
        return int(value) if self.integer else float(value)


SETTING_NAMES = ("steps", "guidance_scale", "eta", "frame_stride", "image_attention_scale", "frames")  # the sliders


def controls_for(model: ModelConfig, config: UIConfig) -> dict[str, Control]:
    """The controls of every generation tab, with the loaded model's defaults and ranges."""
    d = model.defaults
    motion = motion_controls(model)
    length = model.unet.temporal_length
    max_frames = config.max_frames or 2 * length
    s_lo, s_hi = motion.image_attention_scale_range
    fs_lo, fs_hi = motion.frame_stride_range
    return {
        "steps": Control("Steps", 1, config.max_steps, min(d.num_inference_steps, config.max_steps), 1, True,
                         "sampling steps; fewer = faster"),
        "guidance_scale": Control("Guidance scale", 1.0, config.max_guidance_scale,
                                  min(d.guidance_scale, config.max_guidance_scale), 0.5, False,
                                  "text classifier-free guidance"),
        "eta": Control("Eta", 0.0, 1.0, d.eta, 0.05, False, "DDIM noise; 0 = deterministic"),
        "frame_stride": Control(f"Motion ({motion.frame_stride_meaning})", fs_lo, fs_hi,
                                min(max(d.frame_stride, fs_lo), fs_hi), 1, True,
                                f"{motion.frame_stride_more_motion} = more motion"),
        "image_attention_scale": Control("Lambda (image attention scale)", s_lo, s_hi,
                                         motion.image_attention_scale_default, 0.05, False,
                                         "smaller = weaker context stream, less adherence to the image"),
        "frames": Control("Frames", 2, max_frames, min(d.num_frames, max_frames), 1, True,
                          f"the model is trained on {length}; more use sliding windows"),
    }


def check_settings(values: Mapping[str, Any], controls: Mapping[str, Control], seed: Any, random_seed: bool,
                   temporal_length: int | None = None) -> SamplingOptions:
    """The sampling options of the sliders (and of ``values["sampler"]`` when given); any value outside its control's
    range is refused. ``random_seed`` ignores ``seed`` (the options' seed is then None); videos longer than
    ``temporal_length`` use sliding windows."""
    checked: dict[str, Any] = {name: controls[name].check(values[name], name) for name in SETTING_NAMES}
    if values.get("sampler") is not None:
        checked["sampler"] = values["sampler"]  # checked against SAMPLER_NAMES by SamplingOptions
    if not random_seed:
        checked["seed"] = int(Control("seed", 0, SEED_MAX, 0, 1, True).check(seed, "seed"))
    if temporal_length is not None and checked["frames"] > temporal_length:
        checked["window"] = "auto"
    return SamplingOptions.from_settings(checked)


def check_prompt(prompt: Any, what: str = "prompt") -> str:
    if prompt is None:
        return ""
    if not isinstance(prompt, str):
        raise UserError(f"{what} must be text, got {type(prompt).__name__}")
    return prompt.strip()


__all__ = ["CheckedImage", "Control", "SETTING_NAMES", "check_image", "check_prompt", "check_settings",
           "controls_for", "upload_path"]
