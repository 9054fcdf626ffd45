"""Storytelling with shots: a script (YAML or JSON) lists shots; each is rendered with its own seed, the shots are
joined (optionally cross-faded) into one video, and a sidecar JSON records every setting and seed used plus the
model's identity, so that any shot can be re-rendered alone, bit-identically.

Script::

    crossfade: 4          # frames blended between consecutive shots (0 = hard cuts)
    fps: 8                # frame rate of the written video
    seed: 123             # base seed: a shot without "seed" uses seed + its index (0-based)
    defaults:             # settings applied to every shot (a shot's own values win)
      steps: 50
    shots:
      - image: bear.png
        prompt: a brown bear is walking in a zoo enclosure
        frame_stride: 3
      - image: bear_close.png
        prompt: the bear looks into the camera
        seed: 7
        frames: 16

A shot is an image animation, an interpolation (``end_image``) or a loop (``loop: true``); its fields are those of
:class:`Shot`. Relative image paths are relative to the script's folder. The sidecar is itself a valid script
(every value resolved, absolute paths) with an extra ``model`` section and each shot's ``frame_range`` in the video.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import random
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from dynamicrafter.apps.controls import ImageAttentionScale, check_scale_layers, parse_image_attention_scale
from dynamicrafter.apps.frames import crossfade_concat
from dynamicrafter.apps.interpolation import default_loop_method, loop, loop_length
from dynamicrafter.apps.windows import LOOP_METHODS, WEIGHTINGS, TemporalWindows
from dynamicrafter.config import PRESETS
from dynamicrafter.errors import UserError
from dynamicrafter.pipeline import DynamiCrafterPipeline

SIDECAR_FORMAT = "dynamicrafter-story"
SIDECAR_VERSION = 1
DEFAULT_BASE_SEED = 123  # the released scripts' seed
FINGERPRINT_BYTES = 1 << 20  # the model fingerprint hashes the file size and its first and last MiB


@dataclass(frozen=True)
class Shot:
    """One shot. ``None`` means the loaded model's released setting (resolved and recorded in the sidecar).

    ``loop_method``: how a loop is sampled ("ring", "closed", "open"; see :func:`loop`), the model's default when
    unset. ``frames``: frames rendered (closed and open loops keep ``frames - 1``); ``window`` / ``window_stride`` /
    ``window_weighting``: sliding temporal windows for shots longer than the model's temporal length.
    """

    image: str
    prompt: str = ""
    negative_prompt: str = ""
    end_image: str | None = None
    loop: bool = False
    loop_method: str | None = None
    frames: int | None = None
    frame_stride: int | None = None
    seed: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    image_guidance_scale: float | None = None
    guidance_rescale: float | None = None
    eta: float | None = None
    image_attention_scale: ImageAttentionScale | None = None
    context_stream: bool = True
    vdg: bool = True
    window: int | None = None
    window_stride: int | None = None
    window_weighting: str | None = None

    def temporal_windows(self) -> TemporalWindows | None:
        if self.window is None and self.window_stride is None and self.window_weighting is None:
            return None
        return TemporalWindows(self.window, self.window_stride, self.window_weighting or "linear")  # type: ignore


# valid range per numeric field: (minimum, maximum), None = unbounded
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "frames": (1, None), "frame_stride": (1, None), "seed": (-1, 2**63 - 1), "steps": (1, 1000),
    "guidance_scale": (0, None), "image_guidance_scale": (0, None), "guidance_rescale": (0, 1), "eta": (0, 1),
    "window": (1, None), "window_stride": (1, None),
}
_KINDS: dict[str, type] = {
    "image": str, "prompt": str, "negative_prompt": str, "end_image": str, "loop": bool, "loop_method": str,
    "frames": int, "frame_stride": int, "seed": int, "steps": int, "guidance_scale": float,
    "image_guidance_scale": float, "guidance_rescale": float, "eta": float, "context_stream": bool, "vdg": bool,
    "window": int, "window_stride": int, "window_weighting": str,
}
SHOT_FIELDS = tuple(f.name for f in fields(Shot))
STORY_KEYS = ("shots", "defaults", "crossfade", "fps", "seed", "height", "width", "checkpoint", "config", "model",
              "format", "version")


@dataclass
class Story:
    """A parsed script: shots with every path absolute and every seed resolved."""

    shots: list[Shot]
    crossfade: int = 0
    fps: float | None = None
    height: int | None = None
    width: int | None = None
    checkpoint: str | None = None
    config: str | None = None
    model: dict[str, Any] | None = None  # identity recorded in a sidecar
    source: Path | None = None


@dataclass
class StoryResult:
    """``video``: (3, t, H, W) in [-1, 1]; ``clips``: each shot's frames (3, t_k, H, W) before joining;
    ``frame_ranges``: each shot's ``[start, stop)`` in ``video``; ``shots``: the resolved settings rendered."""

    video: torch.Tensor
    clips: list[torch.Tensor]
    frame_ranges: list[tuple[int, int]]
    shots: list[Shot]


# ----------------------------------------------------------------------------------------------------------------
# Reading and checking scripts
# ----------------------------------------------------------------------------------------------------------------


def load_story(path: str | os.PathLike, seed: int | None = None) -> Story:
    """Read and check a YAML / JSON script (or a sidecar); ``seed`` overrides its base seed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"story script not found: '{path}' (pass a YAML or JSON file with a 'shots' list)")
    is_json = path.suffix.lower() == ".json"
    try:
        data = json.loads(path.read_text()) if is_json else yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path.name}: not valid {'JSON' if is_json else 'YAML'} ({_one_line(e)})") from e
    return parse_story(data, base_dir=path.parent, name=path.name, seed=seed, source=path)


def parse_story(data: Any, base_dir: str | os.PathLike = ".", name: str = "story", seed: int | None = None,
                source: Path | None = None) -> Story:
    """Check a script's content (a mapping, or a bare list of shots); errors name the shot and the field."""
    if isinstance(data, list):
        data = {"shots": data}
    if not isinstance(data, dict):
        raise UserError(f"{name}: a story script is a mapping with a 'shots' list, got {type(data).__name__}")
    _check_keys(data, STORY_KEYS, f"{name}:", "key")
    if "format" in data and data["format"] != SIDECAR_FORMAT:
        raise UserError(f"{name}: 'format' is {data['format']!r}, expected {SIDECAR_FORMAT!r}")
    shots_data = data.get("shots")
    if not isinstance(shots_data, list) or not shots_data:
        raise UserError(f"{name}: 'shots' must be a non-empty list of shots (each with at least 'image')")
    for i, raw in enumerate(shots_data):
        if not isinstance(raw, dict):
            raise UserError(f"{name}: shot {i + 1}: a shot is a mapping with at least 'image', got {raw!r}")
        if "format" in data:  # a sidecar: the frame ranges it records are output, not settings
            shots_data[i] = {k: v for k, v in raw.items() if k != "frame_range"}
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise UserError(f"{name}: 'defaults' must be a mapping of shot settings, got {type(defaults).__name__}")
    _check_keys(defaults, SHOT_FIELDS, f"{name}: defaults:", "field")
    crossfade = _story_number(data, "crossfade", int, 0, name, minimum=0)
    fps = _story_number(data, "fps", float, None, name, minimum=1e-3)
    height = _story_number(data, "height", int, None, name, minimum=1)
    width = _story_number(data, "width", int, None, name, minimum=1)
    base_seed = seed if seed is not None else _story_number(data, "seed", int, DEFAULT_BASE_SEED, name, minimum=-1)
    if base_seed < 0:
        base_seed = random.randrange(2**31)
    for key in ("checkpoint", "config"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise UserError(f"{name}: '{key}' must be a path or preset name, got {data[key]!r}")
    model = data.get("model")
    if model is not None and not isinstance(model, dict):
        raise UserError(f"{name}: 'model' must be a mapping (written by the sidecar), got {type(model).__name__}")
    base = Path(base_dir)
    shots = [_parse_shot({**defaults, **raw}, i, base, base_seed, name) for i, raw in enumerate(shots_data)]
    checkpoint = data.get("checkpoint")
    if checkpoint is not None and not Path(checkpoint).is_absolute():
        checkpoint = str((base / checkpoint).resolve())
    return Story(shots, crossfade, fps, height, width, checkpoint, data.get("config"), model, source)


def _parse_shot(raw: dict[str, Any], index: int, base: Path, base_seed: int, name: str) -> Shot:
    where = f"{name}: shot {index + 1}:"
    _check_keys(raw, SHOT_FIELDS, where, "field")
    if raw.get("image") is None:
        raise UserError(f"{where} 'image' is required (the path of the shot's first frame)")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key == "image_attention_scale":
            values[key] = parse_image_attention_scale(value, f"{where} 'image_attention_scale'")
            continue
        values[key] = _typed(value, _KINDS[key], where, key)
        if key in _RANGES:
            lo, hi = _RANGES[key]
            if (lo is not None and values[key] < lo) or (hi is not None and values[key] > hi):
                bounds = f">= {lo:g}" if hi is None else f"in [{lo:g}, {hi:g}]"
                raise UserError(f"{where} '{key}' must be {bounds}, got {value!r}")
    if values.get("window_weighting") not in (None, *WEIGHTINGS):
        raise UserError(f"{where} 'window_weighting' must be one of {list(WEIGHTINGS)}, got "
                        f"{values['window_weighting']!r}")
    if values.get("window") and values.get("window_stride", 0) > values["window"]:
        raise UserError(f"{where} 'window_stride' {values['window_stride']} is larger than 'window' "
                        f"{values['window']}: frames between windows would never be denoised")
    if values.get("loop_method") is not None:
        if values["loop_method"] not in LOOP_METHODS:
            raise UserError(f"{where} 'loop_method' must be one of {list(LOOP_METHODS)}, got "
                            f"{values['loop_method']!r}")
        if not values.get("loop"):
            raise UserError(f"{where} 'loop_method' is set but 'loop' is not true: add 'loop: true' or drop it")
    if values.get("loop") and values.get("end_image"):
        raise UserError(f"{where} 'loop' and 'end_image' exclude each other (a loop ends on its own image)")
    for key in ("image", "end_image"):
        if key in values:
            path = Path(values[key]).expanduser()
            path = path if path.is_absolute() else base / path
            if not path.is_file():
                raise UserError(f"{where} '{key}' file not found: '{path}' (relative paths start at the script's "
                                f"folder)")
            values[key] = str(path.resolve())
    seed = values.get("seed", base_seed + index)
    values["seed"] = random.randrange(2**31) if seed < 0 else seed
    return Shot(**values)


def _typed(value: Any, kind: type, where: str, key: str) -> Any:
    ok = {
        str: isinstance(value, str),
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
    }[kind]
    if not ok:
        names = {str: "a string", bool: "true or false", int: "an integer", float: "a number"}
        raise UserError(f"{where} '{key}' must be {names[kind]}, got {value!r}")
    return float(value) if kind is float else value


def _check_keys(data: dict[str, Any], known: tuple[str, ...], where: str, what: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(f"{where} unknown {what} '{key}' ({hint}known: {', '.join(known)})")


def _story_number(data: dict[str, Any], key: str, kind: type, default: Any, name: str, minimum: float) -> Any:
    if data.get(key) is None:
        return default
    value = _typed(data[key], kind, f"{name}:", key)
    if value < minimum:
        raise UserError(f"{name}: '{key}' must be >= {minimum:g}, got {data[key]!r}")
    return value


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


def resolve_shot(pipe: DynamiCrafterPipeline, shot: Shot) -> Shot:
    """The shot with every ``None`` replaced by the loaded model's setting (what the sidecar records)."""
    d = pipe.config.defaults
    resolved = {
        "frames": d.num_frames, "frame_stride": d.frame_stride, "steps": d.num_inference_steps,
        "guidance_scale": d.guidance_scale, "guidance_rescale": d.guidance_rescale, "eta": d.eta,
    }
    if shot.loop:
        resolved["loop_method"] = default_loop_method(pipe.config)
    shot = dataclasses.replace(shot, **{k: v for k, v in resolved.items() if getattr(shot, k) is None})
    windows = shot.temporal_windows()
    if windows is not None:
        frames, length = int(shot.frames), pipe.config.unet.temporal_length  # type: ignore[arg-type]
        shot = dataclasses.replace(shot, window=windows.window_size(frames, length),
                                   window_stride=windows.window_stride(frames, length),
                                   window_weighting=windows.weighting)
    return shot


def render_shot(pipe: DynamiCrafterPipeline, shot: Shot, height: int | None = None, width: int | None = None
                ) -> torch.Tensor:
    """Render one shot alone -> frames (3, t, H, W) in [-1, 1]; depends only on the shot (its own seed)."""
    kwargs: dict[str, Any] = {
        "negative_prompt": shot.negative_prompt or None, "num_frames": shot.frames, "height": height,
        "width": width, "num_inference_steps": shot.steps, "guidance_scale": shot.guidance_scale,
        "image_guidance_scale": shot.image_guidance_scale, "guidance_rescale": shot.guidance_rescale,
        "frame_stride": shot.frame_stride, "eta": shot.eta, "image_attention_scale": shot.image_attention_scale,
        "context_stream": shot.context_stream, "vdg": shot.vdg, "temporal_windows": shot.temporal_windows(),
        "generator": torch.Generator().manual_seed(shot.seed), "output_type": "pt",
    }
    if shot.loop:
        return loop(pipe, shot.image, shot.prompt, method=shot.loop_method, **kwargs).frames[0]
    return pipe(shot.image, shot.prompt, end_image=shot.end_image, **kwargs).frames[0]


def render_story(pipe: DynamiCrafterPipeline, story: Story) -> StoryResult:
    """Render every shot (with a progress bar over shots) and join them with the story's cross-fade."""
    layer_names = [name for name, _ in pipe.model.unet.image_attention_layers()]
    shots = []
    for i, shot in enumerate(story.shots):
        check_scale_layers(shot.image_attention_scale, layer_names, f"shot {i + 1}: 'image_attention_scale'")
        shots.append(resolve_shot(pipe, shot))
    check_joinable(shots, story.crossfade)
    clips: list[torch.Tensor] = []
    for shot in tqdm(shots, desc="shots", disable=bool(pipe.progress_bar_config.get("disable"))):
        clips.append(render_shot(pipe, shot, story.height, story.width))
    video, ranges = crossfade_concat([c[None] for c in clips], story.crossfade)
    return StoryResult(video[0], clips, ranges, shots)


def shot_length(shot: Shot) -> int:
    """Frames a resolved shot contributes (closed and open loops drop their closing frame)."""
    assert shot.frames is not None
    if shot.loop:
        assert shot.loop_method is not None
        return loop_length(shot.loop_method, shot.frames)
    return shot.frames


def check_joinable(shots: list[Shot], crossfade: int) -> None:
    """Refuse a cross-fade longer than a shot can give, before anything is rendered."""
    for i, shot in enumerate(shots):
        needed = crossfade * ((i > 0) + (i < len(shots) - 1))
        if len(shots) > 1 and shot_length(shot) <= needed:
            raise UserError(f"shot {i + 1}: 'frames' gives {shot_length(shot)} frames, too few for a crossfade of "
                            f"{crossfade} on {'both sides' if needed > crossfade else 'one side'}; use more frames or "
                            f"a smaller 'crossfade'")


# ----------------------------------------------------------------------------------------------------------------
# Sidecar
# ----------------------------------------------------------------------------------------------------------------


def model_identity(pipe: DynamiCrafterPipeline) -> dict[str, Any]:
    """What identifies the model: config name, checkpoint path / size / fingerprint, dtype, device, torch version."""
    identity: dict[str, Any] = {"name": pipe.config.name, "dtype": str(pipe.dtype).removeprefix("torch."),
                                "device": pipe.device.type, "torch": torch.__version__}
    path = pipe.checkpoint_path
    if path is not None:
        identity.update(checkpoint=str(Path(path).resolve()), size=Path(path).stat().st_size,
                        fingerprint=file_fingerprint(path))
    return identity


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of the file size and its first and last MiB (fast on 10 GB checkpoints; catches re-saved files)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(FINGERPRINT_BYTES))
        f.seek(max(size - FINGERPRINT_BYTES, 0))
        digest.update(f.read(FINGERPRINT_BYTES))
    return digest.hexdigest()


def sidecar(story: Story, result: StoryResult, pipe: DynamiCrafterPipeline, fps: float) -> dict[str, Any]:
    """The sidecar content: a script with every value resolved, the model identity and each shot's frame range."""
    shots = []
    for shot, frame_range in zip(result.shots, result.frame_ranges):
        entry = {k: v for k, v in dataclasses.asdict(shot).items() if v is not None}
        shots.append({**entry, "frame_range": list(frame_range)})
    height, width = story.height or pipe.config.defaults.height, story.width or pipe.config.defaults.width
    identity = model_identity(pipe)
    out: dict[str, Any] = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "model": identity}
    if "checkpoint" in identity:
        out["checkpoint"] = identity["checkpoint"]
    if pipe.config.name in PRESETS:  # 512 and 512_interp cannot be told apart from the tensors
        out["config"] = pipe.config.name
    out.update(crossfade=story.crossfade, fps=fps, height=height, width=width, shots=shots)
    return out


def model_mismatch(recorded: dict[str, Any] | None, pipe: DynamiCrafterPipeline) -> str | None:
    """Why a re-render may not be bit-identical (another checkpoint, dtype or device), or None."""
    if not recorded:
        return None
    current = model_identity(pipe)
    diffs = [f"{key} {recorded[key]} -> {current.get(key)}" for key in ("fingerprint", "name", "dtype", "device")
             if key in recorded and recorded[key] != current.get(key)]
    return "; ".join(diffs) or None


__all__ = ["Shot", "Story", "StoryResult", "file_fingerprint", "load_story", "model_identity", "parse_story",
           "render_shot", "render_story", "resolve_shot", "sidecar"]
