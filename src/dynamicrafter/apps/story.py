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

A shot is an image animation, an interpolation (``end_image``) or a loop (``loop: true``); its fields are its
inputs (``image``, ``prompt``, ``negative_prompt``, ``end_image``) and the sampling settings of
:data:`dynamicrafter.options.SETTINGS` (``steps``, ``frames``, ``frame_stride``, ``seed``, ``window`` ...; the
image size is set once, by the story's ``height`` / ``width``). Relative image paths are relative to the
script's folder. The sidecar is itself a valid script (every value resolved, absolute paths) with an extra ``model``
section and each shot's ``frame_range`` in the video.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from dynamicrafter.apps.frames import crossfade_concat
from dynamicrafter.apps.interpolation import loop, loop_length
from dynamicrafter.config import PRESETS
from dynamicrafter.errors import UserError
from dynamicrafter.fingerprint import checkpoint_fingerprint
from dynamicrafter.options import DEFAULT_SEED, SETTING_NAMES, SamplingOptions
from dynamicrafter.pipeline import DynamiCrafterPipeline

SIDECAR_FORMAT = "dynamicrafter-story"
SIDECAR_VERSION = 1
STORY_SIZE_SETTINGS = ("height", "width")  # set once per story (the shots are joined), not per shot
SHOT_INPUTS = ("image", "prompt", "negative_prompt", "end_image")


@dataclass(frozen=True)
class Shot:
    """One shot: its inputs and its sampling options (unset values: the loaded model's released settings, resolved
    and recorded in the sidecar). A loop shot has ``options.loop`` (``loop_method``: "ring", "closed" or "open");
    ``options.num_frames`` frames are rendered (closed and open loops keep ``num_frames - 1``)."""

    image: str
    prompt: str = ""
    negative_prompt: str = ""
    end_image: str | None = None
    options: SamplingOptions = field(default_factory=SamplingOptions)

    @property
    def seed(self) -> int:
        assert self.options.seed is not None, "a parsed shot always has a seed"
        return self.options.seed

    def to_script(self) -> dict[str, Any]:
        """The shot as a script entry (settings by their script names; the story's height / width left out)."""
        inputs = {"image": self.image, "prompt": self.prompt, "negative_prompt": self.negative_prompt,
                  "end_image": self.end_image}
        settings = {k: v for k, v in self.options.to_settings().items() if k not in STORY_SIZE_SETTINGS}
        return {k: v for k, v in {**inputs, **settings}.items() if v is not None}


SHOT_FIELDS = SHOT_INPUTS + tuple(n for n in SETTING_NAMES if n not in STORY_SIZE_SETTINGS)
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
    shots_data = _shot_entries(data, name)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise UserError(f"{name}: 'defaults' must be a mapping of shot settings, got {type(defaults).__name__}")
    _check_keys(defaults, SHOT_FIELDS, f"{name}: defaults:", "field")
    crossfade = _story_number(data, "crossfade", int, 0, name, minimum=0)
    fps = _story_number(data, "fps", float, None, name, minimum=1e-3)
    size = {key: _story_number(data, key, int, None, name, minimum=1) for key in STORY_SIZE_SETTINGS}
    base_seed = seed if seed is not None else _story_number(data, "seed", int, DEFAULT_SEED, name, minimum=-1)
    if base_seed < 0:
        base_seed = random.randrange(2**31)
    for key in ("checkpoint", "config"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise UserError(f"{name}: '{key}' must be a path or preset name, got {data[key]!r}")
    model = data.get("model")
    if model is not None and not isinstance(model, dict):
        raise UserError(f"{name}: 'model' must be a mapping (written by the sidecar), got {type(model).__name__}")
    base = Path(base_dir)
    shots = [_parse_shot({**defaults, **raw, **size}, i, base, base_seed, name) for i, raw in enumerate(shots_data)]
    checkpoint = data.get("checkpoint")
    if checkpoint is not None and not Path(checkpoint).is_absolute():
        checkpoint = str((base / checkpoint).resolve())
    return Story(shots, crossfade, fps, size["height"], size["width"], checkpoint, data.get("config"), model, source)


def _shot_entries(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The script's shots, each a mapping (a sidecar's recorded frame ranges dropped: they are output)."""
    shots_data = data.get("shots")
    if not isinstance(shots_data, list) or not shots_data:
        raise UserError(f"{name}: 'shots' must be a non-empty list of shots (each with at least 'image')")
    entries = []
    for i, raw in enumerate(shots_data):
        if not isinstance(raw, dict):
            raise UserError(f"{name}: shot {i + 1}: a shot is a mapping with at least 'image', got {raw!r}")
        entries.append({k: v for k, v in raw.items() if k != "frame_range"} if "format" in data else raw)
    return entries


def _parse_shot(raw: dict[str, Any], index: int, base: Path, base_seed: int, name: str) -> Shot:
    where = f"{name}: shot {index + 1}:"
    _check_keys({k: v for k, v in raw.items() if k not in STORY_SIZE_SETTINGS}, SHOT_FIELDS, where, "field")
    if raw.get("image") is None:
        raise UserError(f"{where} 'image' is required (the path of the shot's first frame)")
    inputs: dict[str, Any] = {}
    for key in SHOT_INPUTS:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise UserError(f"{where} '{key}' must be a string, got {value!r}")
        if value is not None and key in ("image", "end_image"):
            value = _shot_file(value, key, base, where)
        if value is not None:
            inputs[key] = value
    settings = {k: v for k, v in raw.items() if k not in SHOT_INPUTS}
    seed = settings.get("seed")
    if seed is None or (isinstance(seed, int) and not isinstance(seed, bool) and seed < 0):
        settings["seed"] = base_seed + index if seed is None else random.randrange(2**31)
    options = SamplingOptions.from_settings(settings, where)
    if options.loop and "end_image" in inputs:
        raise UserError(f"{where} 'loop' and 'end_image' exclude each other (a loop ends on its own image)")
    return Shot(options=options, **inputs)


def _shot_file(value: str, key: str, base: Path, where: str) -> str:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise UserError(f"{where} '{key}' file not found: '{path}' (relative paths start at the script's folder)")
    return str(path.resolve())


def _check_keys(data: dict[str, Any], known: tuple[str, ...], where: str, what: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(f"{where} unknown {what} '{key}' ({hint}known: {', '.join(known)})")


def _story_number(data: dict[str, Any], key: str, kind: type, default: Any, name: str, minimum: float) -> Any:
    if data.get(key) is None:
        return default
    value = data[key]
    ok = (isinstance(value, int) if kind is int else isinstance(value, (int, float)) and math.isfinite(value)) \
        and not isinstance(value, bool)
    if not ok:
        raise UserError(f"{name}: '{key}' must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if value < minimum:
        raise UserError(f"{name}: '{key}' must be >= {minimum:g}, got {value!r}")
    return kind(value)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


def resolve_shot(pipe: DynamiCrafterPipeline, shot: Shot, index: int | None = None) -> Shot:
    """The shot with every unset setting replaced by the loaded model's (what the sidecar records); checked against
    the model (layer names, sizes, loop method); ``index`` (0-based) names the shot in errors."""
    try:
        return dataclasses.replace(shot, options=pipe.resolve_options(shot.options))
    except UserError as e:
        raise UserError(f"shot {index + 1}: {e}" if index is not None else str(e)) from None


def render_shot(pipe: DynamiCrafterPipeline, shot: Shot) -> torch.Tensor:
    """Render one shot alone -> frames (3, t, H, W) in [-1, 1]; depends only on the shot (its own seed)."""
    if shot.options.loop:
        return loop(pipe, shot.image, shot.prompt, shot.options, negative_prompt=shot.negative_prompt or None,
                    output_type="pt").frames[0]
    return pipe(shot.image, shot.prompt, shot.options, negative_prompt=shot.negative_prompt or None,
                end_image=shot.end_image, output_type="pt").frames[0]


def render_story(pipe: DynamiCrafterPipeline, story: Story) -> StoryResult:
    """Render every shot (with a progress bar over shots) and join them with the story's cross-fade."""
    shots = [resolve_shot(pipe, shot, i) for i, shot in enumerate(story.shots)]  # all checked before rendering
    check_joinable(shots, story.crossfade)
    clips: list[torch.Tensor] = []
    for shot in tqdm(shots, desc="shots", disable=bool(pipe.progress_bar_config.get("disable"))):
        clips.append(render_shot(pipe, shot))
    video, ranges = crossfade_concat([c[None] for c in clips], story.crossfade)
    return StoryResult(video[0], clips, ranges, shots)


def shot_length(shot: Shot) -> int:
    """Frames a resolved shot contributes (closed and open loops drop their closing frame)."""
    frames = shot.options.num_frames
    assert frames is not None, "resolve the shot first"
    if shot.options.loop:
        assert shot.options.loop_method is not None
        return loop_length(shot.options.loop_method, frames)
    return frames


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
                        fingerprint=checkpoint_fingerprint(path))
    return identity


def sidecar(story: Story, result: StoryResult, pipe: DynamiCrafterPipeline, fps: float) -> dict[str, Any]:
    """The sidecar content: a script with every value resolved, the model identity and each shot's frame range."""
    shots = [{**shot.to_script(), "frame_range": list(frame_range)}
             for shot, frame_range in zip(result.shots, result.frame_ranges)]
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


__all__ = ["Shot", "Story", "StoryResult", "load_story", "model_identity", "parse_story",
           "render_shot", "render_story", "resolve_shot", "sidecar"]
