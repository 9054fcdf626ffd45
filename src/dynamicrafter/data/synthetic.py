"""A generated, captioned video data set for training and evaluating a small DynamiCrafter on CPU.

Each clip is a static background with one *main* object and up to ``max_distractors`` smaller, still distractor
objects. The main object (drawn on top, and the largest object of the clip except possibly in the first frames of a
``zoom_in``) makes exactly one motion from :data:`MOTIONS`:

* ``left`` / ``right`` / ``up`` / ``down``: translation at a constant speed (``speed_range``, in fractions of the
  shorter frame side per frame), the object staying inside the frame;
* ``zoom_in`` / ``zoom_out``: the *object* grows / shrinks about its own centre at a constant rate
  (``zoom_rate_range``: change of the log-size per frame); background and distractors do not change, i.e. this is
  the object approaching / receding, not a camera zoom;
* ``rotate_cw`` / ``rotate_ccw``: rotation about its centre, clockwise / counter-clockwise *as seen on screen*, at
  ``rotation_speed_range`` degrees per frame (kept under half of every shape's symmetry angle so the direction is
  unambiguous; round shapes that rotate always get a patterned texture so the rotation is visible);
* ``still``: nothing moves; all frames are identical.

Everything about a clip (scene, motion, rate, caption) is a function of ``(seed, split family, clip id)``, so a clip
costs no disk and renders in a few milliseconds (vectorised numpy over ``(t, h, w)``). Splits: ``train`` and ``test``
take disjoint clip ids (an id belongs to ``test`` when a seed-keyed hash of it falls below ``held_out_fraction``);
``novel`` is a generalisation split whose main object is always one of ``held_out_combos`` (``(shape, colour)``
pairs that ``train`` and ``test`` never use for their main object).

Two scene layouts (``SyntheticConfig.layout``). ``released`` (the default, which the shipped model was trained on)
places each motion where it fits: a translation starts on the side opposite its travel, a zoom in starts small and a
zoom out large, so the first frame alone gives much of the motion away (reports/tiny/evaluator/SHORTCUT.md).
``centred`` removes that shortcut: every motion draws the main object's start from the same centre box and the same
size range (:data:`CENTRED_RADIUS`, :data:`CENTRED_BOX`), each travel fits in the room left from the edge of that box,
zooms start from that mid size (at most x :data:`CENTRED_MAX_ZOOM` either way), and the main object is always one of
:data:`ROTATION_SAFE_SHAPES`, the shapes whose turn survives the autoencoder, whatever its motion (so the shape does
not tell a turn either). Every moving clip of this layout moves at least ``min_latent_travel`` latent pixels (see
:func:`motion_amount`); the config refuses rates and sizes that cannot.

Captions name the main object (colour, shape, sometimes texture), its motion and the background with several
phrasings and synonyms each; a ``motion_only_fraction`` of the clips instead get a caption naming only the motion
("sliding to the left"), like the paper's decoupled motion descriptions. Structured labels come with every sample.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from dynamicrafter.data.index import write_table
from dynamicrafter.data.video import frames_to_video
from dynamicrafter.errors import ConfigError
from dynamicrafter.media import atomic_path, save_video

logger = logging.getLogger(__name__)


class Motion(enum.StrEnum):
    """The motions a synthetic clip can show (one per clip)."""

    LEFT = "left"
    RIGHT = "right"
    UP = "up"
    DOWN = "down"
    ZOOM_IN = "zoom_in"
    ZOOM_OUT = "zoom_out"
    ROTATE_CW = "rotate_cw"
    ROTATE_CCW = "rotate_ccw"
    STILL = "still"


MOTIONS: tuple[str, ...] = tuple(m.value for m in Motion)
TRANSLATIONS: dict[str, tuple[float, float]] = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0),
                                                "down": (0.0, 1.0)}  # unit direction (x right, y down)
SPLITS = ("train", "test", "novel")

SHAPES = ("square", "circle", "triangle", "star", "diamond", "ring", "cross", "hexagon")
ROUND_SHAPES = ("circle", "ring")  # rotation-invariant: need a patterned texture to show rotation
SYMMETRY_DEGREES = {"square": 90, "circle": 360, "triangle": 120, "star": 72, "diamond": 180, "ring": 360,
                    "cross": 90, "hexagon": 60}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "orange": (245, 140, 30), "yellow": (240, 220, 40), "green": (40, 170, 60),
    "cyan": (40, 205, 215), "blue": (40, 80, 225), "purple": (140, 60, 200), "pink": (245, 115, 185),
}
TEXTURES = ("solid", "striped", "dotted", "checkered")
BACKGROUNDS = ("solid", "gradient", "striped", "noise", "checkered")
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (22, 22, 22), "white": (236, 236, 236), "gray": (128, 128, 128), "beige": (215, 200, 168),
}

# geometry, in fractions of the shorter frame side (object "radius" = half its extent)
MAIN_RADIUS = (0.16, 0.22)
ZOOM_SMALL_RADIUS = (0.10, 0.13)  # zoom_in start / zoom_out end
ZOOM_MAX_RADIUS = 0.36
DISTRACTOR_RADIUS = (0.05, 0.08)
EDGE_MARGIN = 0.02
SHAPE_EXTENT = 1.15  # every shape lies within this many object radii of its centre
TEXTURE_SHADE = 0.55  # patterned textures alternate the colour with this darker shade of it
TEXTURE_PERIOD = 0.6  # pattern period in object radii
BACKGROUND_CONTRAST = 48.0  # grey levels between the two tones of background patterns
NOISE_GRAIN = 0.2  # fine grain of the noise background, relative to its smooth field
GRADIENT_CONTRAST = 70.0
BACKGROUND_PERIOD = (0.10, 0.22)  # stripe / checker period, fractions of the shorter side
NOISE_CELLS = 8  # the noise background is bilinear-upsampled from a grid of about this many cells per side
SPLIT_HASH_SCALE = float(2**64)
LAYOUTS = ("released", "centred")
# the ``centred`` layout (fractions of the shorter frame side unless stated)
CENTRED_RADIUS = (0.18, 0.22)  # main object's radius at frame 0, for every motion
CENTRED_BOX = 0.05  # the start centre lies within +- this of the frame centre, for every motion
CENTRED_MAX_ZOOM = 1.8  # largest change of the object's size over a zoom clip, either way
ROTATION_SAFE_SHAPES = ("square", "triangle", "star", "diamond", "cross")  # turns readable after the autoencoder
MIN_ROTATING_RADIUS_PX = 7.0  # ... at a radius of 7 px or more (reports/tiny/evaluator/ROTATION_BY_SIZE.md)
MAX_ROTATION_FRACTION = 0.5  # rotation per frame must stay below this fraction of the shape's symmetry angle
STRIDE_STREAM = 7  # extra key of the random stream that draws a clip's frame stride


@dataclass
class SyntheticConfig:
    """The generated data set. Frame size is ``height x width``; rates are per frame (see the module docstring)."""

    num_clips: int = 1000
    frames: int = 16
    height: int = 64
    width: int = 64
    seed: int = 0
    speed_range: tuple[float, float] = (0.015, 0.035)
    zoom_rate_range: tuple[float, float] = (0.03, 0.05)
    rotation_speed_range: tuple[float, float] = (4.0, 10.0)
    max_distractors: int = 2
    motion_only_fraction: float = 0.2
    held_out_fraction: float = 0.1
    held_out_combos: tuple[tuple[str, str], ...] = ()
    motions: tuple[str, ...] = MOTIONS
    fps: int = 8
    frame_stride: int = 1
    # Per-clip frame strides: a clip with stride k shows every k-th frame of the motion (k times the rates above),
    # labelled frame_stride = k and fps = fps // k, as clips sampled from real video at a stride. (1,) = off.
    frame_strides: tuple[int, ...] = (1,)
    # Scene layout (see the module docstring): "released" (the default) or "centred" (no first-frame shortcut). The
    # centred layout makes every moving clip move at least min_latent_travel pixels of a latent grid latent_factor
    # times coarser than the frames (the recipe's autoencoder: f = 4); the released layout ignores both.
    layout: str = "released"
    latent_factor: int = 4
    min_latent_travel: float = 2.0

    def __post_init__(self) -> None:
        self.held_out_combos = tuple((str(s), str(c)) for s, c in self.held_out_combos)
        self.motions = tuple(self.motions)
        self.frame_strides = tuple(int(k) for k in self.frame_strides)
        if not self.frame_strides or min(self.frame_strides) < 1:
            raise ConfigError(f"frame_strides must be positive integers, got {self.frame_strides}")
        if self.num_clips < 0 or self.frames < 2 or min(self.height, self.width) < 8:
            raise ConfigError(f"synthetic data needs num_clips >= 0, frames >= 2 and a size of at least 8x8, got "
                              f"{self.num_clips}, {self.frames}, {self.height}x{self.width}")
        if not 0.0 <= self.motion_only_fraction <= 1.0 or not 0.0 <= self.held_out_fraction < 1.0:
            raise ConfigError("motion_only_fraction must be in [0, 1] and held_out_fraction in [0, 1)")
        for name in ("speed_range", "zoom_rate_range", "rotation_speed_range"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ConfigError(f"{name} must be (low, high) with 0 < low <= high, got {(low, high)}")
        fastest = max(self.rotation_speed_range) * max(self.frame_strides)
        if fastest >= MAX_ROTATION_FRACTION * min(SYMMETRY_DEGREES.values()):
            raise ConfigError(f"rotation speed {fastest} deg/frame would make the rotation direction ambiguous; keep "
                              f"it under {MAX_ROTATION_FRACTION * min(SYMMETRY_DEGREES.values()):g}")
        unknown = [m for m in self.motions if m not in MOTIONS]
        if unknown or not self.motions:
            raise ConfigError(f"motions must be a non-empty subset of {', '.join(MOTIONS)}, got {self.motions}")
        for shape, colour in self.held_out_combos:
            if shape not in SHAPES or colour not in COLOURS:
                raise ConfigError(f"held-out combination ({shape!r}, {colour!r}) is not a known (shape, colour); "
                                  f"shapes: {', '.join(SHAPES)}; colours: {', '.join(COLOURS)}")
        if len(self.held_out_combos) >= len(main_shapes(self)) * len(COLOURS):
            raise ConfigError("held_out_combos must leave some (shape, colour) combinations for training")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.layout == "centred":
            self._check_centred()

    def _check_centred(self) -> None:
        off = sorted({s for s, _ in self.held_out_combos} - set(ROTATION_SAFE_SHAPES))
        if off:
            raise ConfigError(f"the centred layout's main objects are {', '.join(ROTATION_SAFE_SHAPES)}; held-out "
                              f"shapes {', '.join(off)} never appear")
        if self.latent_factor < 1 or self.min_latent_travel < 0:
            raise ConfigError(f"latent_factor must be >= 1 and min_latent_travel >= 0, got {self.latent_factor}, "
                              f"{self.min_latent_travel}")
        smallest = CENTRED_RADIUS[0] * self.short_side
        if any(m.startswith("rotate") for m in self.motions) and smallest < MIN_ROTATING_RADIUS_PX:
            raise ConfigError(f"centred layout: a {smallest:.1f} px object's turn does not survive the autoencoder "
                              f"(needs {MIN_ROTATING_RADIUS_PX:g} px); use frames of at least "
                              f"{math.ceil(MIN_ROTATING_RADIUS_PX / CENTRED_RADIUS[0])} px or leave out rotations")
        short = {m: px for m, px in centred_minimum_motion(self).items() if px < self.min_travel_px or px <= 0}
        if short:
            least = ", ".join(f"{m} {px:.1f} px" for m, px in short.items())
            raise ConfigError(f"centred layout: the least motion of {least} is under {self.min_travel_px:g} px "
                              f"({self.min_latent_travel:g} latent px at f = {self.latent_factor}); raise the rates "
                              f"or the frame size")

    @property
    def short_side(self) -> int:
        return min(self.height, self.width)

    @property
    def min_travel_px(self) -> float:
        """The least motion of a moving clip of the centred layout, in frame pixels."""
        return self.min_latent_travel * self.latent_factor

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict; a released-layout config leaves out the layout fields, so that it reads
        exactly as before they existed (latent caches and written data sets made then stay valid)."""
        data = asdict(self)
        if self.layout == "released":
            for name in ("layout", "latent_factor", "min_latent_travel"):
                data.pop(name)
        return data


def main_shapes(config: SyntheticConfig) -> tuple[str, ...]:
    """The shapes the main object can have in ``config``'s layout."""
    return ROTATION_SAFE_SHAPES if config.layout == "centred" else SHAPES


# ----------------------------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSpec:
    """One object: where it is at frame 0 (pixels), its size (radius, pixels), angle (degrees, clockwise)."""

    shape: str
    colour: str
    texture: str
    x: float
    y: float
    radius: float
    angle: float


@dataclass(frozen=True)
class BackgroundSpec:
    kind: str
    colour: str
    angle: float  # direction of gradient / stripes, degrees
    period: float  # stripe / checker period, pixels
    shift: float  # signed brightness offset of the second gradient colour
    noise_seed: int


@dataclass(frozen=True)
class Scene:
    """Everything needed to render and caption one clip. ``rate`` is in pixels, log-size units or degrees per frame
    for translations, zooms and rotations (0 for ``still``)."""

    clip_id: int
    split: str
    motion: str
    rate: float
    main: ObjectSpec
    distractors: tuple[ObjectSpec, ...]
    background: BackgroundSpec
    caption: str
    motion_only_caption: bool
    frame_stride: int = 1

    def labels(self) -> dict[str, Any]:
        """Structured labels for evaluation (flat, DataLoader-collatable)."""
        return {"clip_id": self.clip_id, "split": self.split, "motion": self.motion, "shape": self.main.shape,
                "colour": self.main.colour, "texture": self.main.texture, "background": self.background.kind,
                "background_colour": self.background.colour, "num_distractors": len(self.distractors),
                "rate": self.rate, "motion_only_caption": self.motion_only_caption, "frame_stride": self.frame_stride}


def _split_hash(seed: int, ids: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) values from (seed, id) with the splitmix64 finaliser (vectorised, wrapping uint64)."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z.astype(np.float64) / SPLIT_HASH_SCALE


def split_clip_ids(config: SyntheticConfig, split: str) -> np.ndarray:
    """The first ``config.num_clips`` clip ids (int64) of ``split``; ``train`` and ``test`` ids never overlap."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "novel":
        if not config.held_out_combos:
            raise ConfigError("the 'novel' split needs held_out_combos (shape, colour pairs kept out of training)")
        return np.arange(config.num_clips, dtype=np.int64)
    if split == "test" and config.held_out_fraction <= 0:
        raise ConfigError("the 'test' split is empty with held_out_fraction 0; set a fraction such as 0.1")
    keep_fraction = config.held_out_fraction if split == "test" else 1.0 - config.held_out_fraction
    chunk = max(1024, int(config.num_clips / max(keep_fraction, 1e-3) * 1.2))
    found: list[np.ndarray] = []
    count, start = 0, 0
    while count < config.num_clips:
        ids = np.arange(start, start + chunk, dtype=np.int64)
        held_out = _split_hash(config.seed, ids) < config.held_out_fraction
        ids = ids[held_out] if split == "test" else ids[~held_out]
        found.append(ids)
        count, start = count + len(ids), start + chunk
    return np.concatenate(found)[: config.num_clips] if found else np.zeros(0, dtype=np.int64)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def make_scene(config: SyntheticConfig, split: str, clip_id: int) -> Scene:
    """Draw the scene, motion and caption of clip ``clip_id`` of ``split`` (deterministic)."""
    family = 1 if split == "novel" else 0  # train and test share one id space (disjoint ids); novel has its own
    rng = np.random.default_rng([config.seed, family, int(clip_id)])
    s, h, w = config.short_side, config.height, config.width
    if len(config.frame_strides) > 1:  # a separate stream, so that (1,) reproduces the clips of earlier versions
        stride_rng = np.random.default_rng([config.seed, family, int(clip_id), STRIDE_STREAM])
        stride = int(config.frame_strides[int(stride_rng.integers(len(config.frame_strides)))])
    else:
        stride = config.frame_strides[0]
    motion = str(rng.choice(config.motions))
    shape, colour = _main_shape_colour(rng, config, split)
    textures = TEXTURES[1:] if motion.startswith("rotate") and shape in ROUND_SHAPES else TEXTURES
    texture = str(rng.choice(textures))
    angle = float(rng.uniform(0, 360))
    place = _centred_main if config.layout == "centred" else _released_main
    radius, rate, x, y = place(rng, config, motion, stride)
    main = ObjectSpec(shape, colour, texture, x, y, radius, angle)
    margin = EDGE_MARGIN * s
    distractors = []
    for _ in range(int(rng.integers(0, config.max_distractors + 1))):
        d_radius = _uniform(rng, DISTRACTOR_RADIUS) * s
        d_colour = str(rng.choice([c for c in COLOURS if c != colour]))
        distractors.append(ObjectSpec(str(rng.choice(SHAPES)), d_colour, "solid",
                                      _start(rng, w, d_radius + margin, 0.0), _start(rng, h, d_radius + margin, 0.0),
                                      d_radius, float(rng.uniform(0, 360))))
    background = BackgroundSpec(
        kind=str(rng.choice(BACKGROUNDS)), colour=str(rng.choice(list(BACKGROUND_COLOURS))),
        angle=float(rng.choice([0.0, 45.0, 90.0, 135.0])), period=_uniform(rng, BACKGROUND_PERIOD) * s,
        shift=float(rng.choice([-1.0, 1.0])) * GRADIENT_CONTRAST, noise_seed=int(rng.integers(0, 2**31)))
    motion_only = bool(rng.random() < config.motion_only_fraction)
    caption = compose_caption(rng, motion, main, background, motion_only)
    return Scene(int(clip_id), split, motion, float(rate), main, tuple(distractors), background, caption, motion_only,
                 stride)


def _released_main(rng: np.random.Generator, config: SyntheticConfig, motion: str, stride: int
                   ) -> tuple[float, float, float, float]:
    """Radius, rate and start centre of the released layout: each motion placed where it fits (the shortcut)."""
    s, h, w, t = config.short_side, config.height, config.width, config.frames
    margin = EDGE_MARGIN * s
    if motion in TRANSLATIONS:
        dx, dy = TRANSLATIONS[motion]
        radius = _uniform(rng, MAIN_RADIUS) * s
        room = (w if dx else h) - 2 * (radius + margin)  # pixels the object can travel and stay inside
        rate = min(_uniform(rng, config.speed_range) * s * stride, room / (t - 1))
        travel = rate * (t - 1)
        return radius, rate, _start(rng, w, radius + margin, travel * dx), _start(rng, h, radius + margin, travel * dy)
    if motion in ("zoom_in", "zoom_out"):
        small = _uniform(rng, ZOOM_SMALL_RADIUS) * s
        rate = min(_uniform(rng, config.zoom_rate_range) * stride, math.log(ZOOM_MAX_RADIUS * s / small) / (t - 1))
        radius = small if motion == "zoom_in" else small * math.exp(rate * (t - 1))
        largest = small * math.exp(rate * (t - 1))
    else:
        radius = largest = _uniform(rng, MAIN_RADIUS) * s
        rate = _uniform(rng, config.rotation_speed_range) * stride if motion.startswith("rotate") else 0.0
    return radius, rate, _start(rng, w, largest + margin, 0.0), _start(rng, h, largest + margin, 0.0)


def _centred_room(config: SyntheticConfig, radius: float, extent: int) -> float:
    """Pixels an object of ``radius`` starting anywhere in the centre box can travel along a side of ``extent`` pixels
    (either way) and stay wholly inside the frame."""
    s = config.short_side
    return extent / 2 - CENTRED_BOX * s - SHAPE_EXTENT * radius - EDGE_MARGIN * s


def _centred_largest_radius(config: SyntheticConfig) -> float:
    """The largest radius (pixels) an object starting anywhere in the centre box can grow to and stay inside."""
    s = config.short_side
    return (s / 2 - CENTRED_BOX * s - EDGE_MARGIN * s) / SHAPE_EXTENT


def _centred_main(rng: np.random.Generator, config: SyntheticConfig, motion: str, stride: int
                  ) -> tuple[float, float, float, float]:
    """Radius, rate and start centre of the centred layout: size and start drawn alike for every motion, first."""
    s, h, w, t = config.short_side, config.height, config.width, config.frames
    radius = _uniform(rng, CENTRED_RADIUS) * s
    x = w / 2 + float(rng.uniform(-CENTRED_BOX, CENTRED_BOX)) * s
    y = h / 2 + float(rng.uniform(-CENTRED_BOX, CENTRED_BOX)) * s
    if motion in TRANSLATIONS:
        room = _centred_room(config, radius, w if TRANSLATIONS[motion][0] else h)
        rate = min(_uniform(rng, config.speed_range) * s * stride, room / (t - 1))
    elif motion in ("zoom_in", "zoom_out"):
        # log-size change over the clip, within the clip-length cap and (growing) the room
        change = min(_uniform(rng, config.zoom_rate_range) * stride * (t - 1), math.log(CENTRED_MAX_ZOOM))
        if motion == "zoom_in":
            change = min(change, math.log(_centred_largest_radius(config) / radius))
        rate = change / (t - 1)
    else:
        rate = _uniform(rng, config.rotation_speed_range) * stride if motion.startswith("rotate") else 0.0
    return radius, rate, x, y


def motion_amount(motion: str, rate: float, radius: float, frames: int) -> float:
    """How far the main object moves over a clip, in pixels: a translation's travel, a zoom's change of the object's
    size (its diameter, 2 r), a turn's arc at the radius (both as the tracker reads them); 0 when still."""
    span = frames - 1
    if motion in TRANSLATIONS:
        return rate * span
    if motion == "zoom_in":
        return 2 * radius * (math.exp(rate * span) - 1.0)
    if motion == "zoom_out":
        return 2 * radius * (1.0 - math.exp(-rate * span))
    if motion.startswith("rotate"):
        return math.radians(rate) * span * radius
    return 0.0


def centred_minimum_motion(config: SyntheticConfig) -> dict[str, float]:
    """The least :func:`motion_amount` (pixels) of each moving motion of ``config`` in the centred layout: the slowest
    rate at the smallest frame stride, capped as :func:`_centred_main` caps it, at the worst object size."""
    s, t, k = config.short_side, config.frames, min(config.frame_strides)
    radii = (CENTRED_RADIUS[0] * s, CENTRED_RADIUS[1] * s)  # every amount is monotone or concave in the radius
    zoom = min(config.zoom_rate_range[0] * k * (t - 1), math.log(CENTRED_MAX_ZOOM))
    out = {}
    for motion in config.motions:
        if motion in TRANSLATIONS:
            extent = config.width if TRANSLATIONS[motion][0] else config.height
            amounts = [min(config.speed_range[0] * s * k * (t - 1), _centred_room(config, r, extent)) for r in radii]
        elif motion == "zoom_in":
            amounts = [2 * min(r * (math.exp(zoom) - 1.0), _centred_largest_radius(config) - r) for r in radii]
        elif motion == "zoom_out":
            amounts = [motion_amount(motion, zoom / (t - 1), r, t) for r in radii]
        elif motion.startswith("rotate"):
            amounts = [motion_amount(motion, config.rotation_speed_range[0] * k, r, t) for r in radii]
        else:
            continue
        out[motion] = min(amounts)
    return out


def _main_shape_colour(rng: np.random.Generator, config: SyntheticConfig, split: str) -> tuple[str, str]:
    if split == "novel":
        shape, colour = config.held_out_combos[int(rng.integers(len(config.held_out_combos)))]
        return shape, colour
    held_out = set(config.held_out_combos)
    allowed = [(s, c) for s in main_shapes(config) for c in COLOURS if (s, c) not in held_out]
    return allowed[int(rng.integers(len(allowed)))]


def _start(rng: np.random.Generator, extent: int, inset: float, travel: float) -> float:
    """A start coordinate such that ``[start, start + travel]`` stays within ``[inset, extent - inset]``."""
    low, high = inset - min(travel, 0.0), extent - inset - max(travel, 0.0)
    return float(rng.uniform(low, high)) if high > low else (low + high) / 2.0


# ----------------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------------

# (present tense, gerund) phrasings of each motion
MOTION_PHRASES: dict[str, tuple[tuple[str, str], ...]] = {
    "left": (("moves to the left", "moving to the left"), ("slides left", "sliding left"),
             ("drifts leftward", "drifting leftward"), ("goes left", "going left"),
             ("travels to the left", "travelling to the left"), ("glides to the left", "gliding to the left")),
    "right": (("moves to the right", "moving to the right"), ("slides right", "sliding right"),
              ("drifts rightward", "drifting rightward"), ("goes right", "going right"),
              ("travels to the right", "travelling to the right"), ("glides to the right", "gliding to the right")),
    "up": (("moves up", "moving up"), ("rises", "rising"), ("floats upward", "floating upward"),
           ("slides up", "sliding up"), ("climbs upward", "climbing upward"), ("goes up", "going up")),
    "down": (("moves down", "moving down"), ("falls", "falling"), ("sinks", "sinking"),
             ("slides down", "sliding down"), ("drops downward", "dropping downward"), ("goes down", "going down")),
    "zoom_in": (("grows larger", "growing larger"), ("gets bigger", "getting bigger"), ("zooms in", "zooming in"),
                ("expands", "expanding"), ("swells up", "swelling up"), ("comes closer", "coming closer")),
    "zoom_out": (("shrinks", "shrinking"), ("gets smaller", "getting smaller"), ("zooms out", "zooming out"),
                 ("contracts", "contracting"), ("dwindles", "dwindling"), ("moves away", "moving away")),
    "rotate_cw": (("rotates clockwise", "rotating clockwise"), ("spins clockwise", "spinning clockwise"),
                  ("turns clockwise", "turning clockwise"), ("twirls clockwise", "twirling clockwise"),
                  ("revolves clockwise", "revolving clockwise")),
    "rotate_ccw": (("rotates counterclockwise", "rotating counterclockwise"),
                   ("spins anticlockwise", "spinning anticlockwise"),
                   ("turns counter-clockwise", "turning counter-clockwise"),
                   ("twirls counterclockwise", "twirling counterclockwise"),
                   ("revolves anticlockwise", "revolving anticlockwise")),
    "still": (("stays still", "staying still"), ("does not move", "not moving"),
              ("remains motionless", "remaining motionless"), ("sits still", "sitting still"),
              ("stays in place", "staying in place"), ("rests without moving", "resting without moving")),
}
SHAPE_NOUNS: dict[str, tuple[str, ...]] = {
    "square": ("square", "box", "block", "tile"), "circle": ("circle", "disc", "ball", "round shape"),
    "triangle": ("triangle", "triangular shape", "pyramid shape"), "star": ("star", "star shape", "five-pointed star"),
    "diamond": ("diamond", "rhombus", "diamond shape"), "ring": ("ring", "hoop", "donut shape"),
    "cross": ("cross", "plus sign", "plus shape"), "hexagon": ("hexagon", "six-sided shape", "hexagonal tile"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "bright red", "scarlet"), "orange": ("orange",), "yellow": ("yellow", "golden yellow"),
    "green": ("green", "grass-green"), "cyan": ("cyan", "turquoise"), "blue": ("blue", "deep blue"),
    "purple": ("purple", "violet"), "pink": ("pink", "rosy pink"),
}
TEXTURE_WORDS: dict[str, tuple[str, ...]] = {
    "solid": ("", "plain", "solid"), "striped": ("striped", "stripy"), "dotted": ("dotted", "polka-dot", "spotted"),
    "checkered": ("checkered", "checked"),
}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "solid": ("plain {c}", "{c}", "flat {c}"), "gradient": ("{c} gradient", "softly shaded {c}", "{c} fading"),
    "striped": ("{c} striped", "striped {c}"), "noise": ("noisy {c}", "grainy {c}", "speckled {c}"),
    "checkered": ("{c} checkered", "{c} checkerboard"),
}
BACKGROUND_NOUNS = ("background", "backdrop")
BACKGROUND_PREPOSITIONS = ("over", "on", "against", "in front of")
SCENE_TEMPLATES = (
    "{obj} {verb} {bg}",
    "{obj} {bg} {verb}",
    "{obj} {gerund} {bg}",
    "{bg}, {obj} {verb}",
)
MOTION_ONLY_TEMPLATES = ("{gerund}", "something {verb}", "an object {gerund}")
VOWELS = "aeiou"


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _with_article(phrase: str) -> str:
    return f"{'an' if phrase[:1] in VOWELS else 'a'} {phrase}"


def compose_caption(rng: np.random.Generator, motion: str, main: ObjectSpec, background: BackgroundSpec,
                    motion_only: bool) -> str:
    """A caption in everyday wording (phrasings and synonyms drawn from ``rng``) naming the scene and the motion, or
    the motion alone."""
    verb, gerund = MOTION_PHRASES[motion][int(rng.integers(len(MOTION_PHRASES[motion])))]
    if motion_only:
        return _pick(rng, MOTION_ONLY_TEMPLATES).format(verb=verb, gerund=gerund)
    words = [_pick(rng, TEXTURE_WORDS[main.texture]), _pick(rng, COLOUR_WORDS[main.colour]),
             _pick(rng, SHAPE_NOUNS[main.shape])]
    obj = _with_article(" ".join(word for word in words if word))
    bg_desc = _pick(rng, BACKGROUND_WORDS[background.kind]).format(c=background.colour)
    bg = f"{_pick(rng, BACKGROUND_PREPOSITIONS)} {_with_article(bg_desc)} {_pick(rng, BACKGROUND_NOUNS)}"
    template = _pick(rng, SCENE_TEMPLATES)
    return template.format(obj=obj, verb=verb, gerund=gerund, bg=bg)


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


def _polygon_sdf(u: np.ndarray, v: np.ndarray, sides: int, inradius: float, first_normal_deg: float) -> np.ndarray:
    """Signed distance (exact inside, a lower bound outside) to a regular polygon, from its edge normals."""
    angles = np.deg2rad(first_normal_deg + 360.0 / sides * np.arange(sides))
    d = u * np.cos(angles[0]) + v * np.sin(angles[0])
    for a in angles[1:]:
        d = np.maximum(d, u * np.cos(a) + v * np.sin(a))
    return d - inradius


def _box_sdf(u: np.ndarray, v: np.ndarray, half_u: float, half_v: float) -> np.ndarray:
    return np.maximum(np.abs(u) - half_u, np.abs(v) - half_v)


def _star_sdf(u: np.ndarray, v: np.ndarray, points: int = 5, outer: float = 1.0, inner: float = 0.45) -> np.ndarray:
    """Distance to the edge of a ``points``-pointed star (one point up), folded into one edge's sector."""
    sector = 2 * math.pi / points
    radius = np.hypot(u, v)
    phi = np.mod(np.arctan2(v, u) + math.pi / 2, sector)  # angle from the nearest point, one point facing up (-v)
    phi = np.abs(phi - sector / 2)  # distance from the sector's middle: mirror onto [0, sector / 2]
    phi = sector / 2 - phi  # angle from the outer vertex in [0, sector / 2]
    qx, qy = radius * np.cos(phi), radius * np.sin(phi)
    ax, ay = outer, 0.0
    bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    nx, ny = by - ay, ax - bx  # outward normal of edge A -> B
    norm = math.hypot(nx, ny)
    return ((qx - ax) * nx + (qy - ay) * ny) / norm


# signed distance in object units (radius 1), negative inside; u points right and v down in the object's frame
SHAPE_SDFS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "square": lambda u, v: _box_sdf(u, v, 0.78, 0.78),
    "circle": lambda u, v: np.hypot(u, v) - 0.92,
    "triangle": lambda u, v: _polygon_sdf(u, v, 3, 0.5, 90.0),  # circumradius 1, one vertex up
    "star": _star_sdf,
    "diamond": lambda u, v: (np.abs(u) + np.abs(v) - 1.0) / math.sqrt(2.0),
    "ring": lambda u, v: np.abs(np.hypot(u, v) - 0.7) - 0.24,
    "cross": lambda u, v: np.minimum(_box_sdf(u, v, 0.95, 0.32), _box_sdf(u, v, 0.32, 0.95)),
    "hexagon": lambda u, v: _polygon_sdf(u, v, 6, 0.85, 0.0),
}


def _texture_mix(texture: str, u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """Weight in [0, 1] of the dark shade at each pixel (object units), ``None`` for a solid texture."""
    k = 2 * math.pi / TEXTURE_PERIOD
    if texture == "striped":
        return 0.5 + 0.5 * np.tanh(3.0 * np.sin(k * u))
    if texture == "checkered":
        return 0.5 + 0.5 * np.tanh(3.0 * np.sin(k * u) * np.sin(k * v))
    if texture == "dotted":
        cu = u - TEXTURE_PERIOD * np.round(u / TEXTURE_PERIOD)
        cv = v - TEXTURE_PERIOD * np.round(v / TEXTURE_PERIOD)
        return np.clip(0.5 - (np.hypot(cu, cv) - TEXTURE_PERIOD * 0.25) * 12.0, 0.0, 1.0)
    return None


def object_trajectory(obj: ObjectSpec, motion: str, rate: float, frames: int) -> tuple[np.ndarray, ...]:
    """Per-frame centre x, y (pixels), radius (pixels) and angle (radians, clockwise on screen), each ``(t,)``."""
    steps = np.arange(frames, dtype=np.float64)
    x, y = np.full(frames, obj.x), np.full(frames, obj.y)
    radius, angle = np.full(frames, obj.radius), np.full(frames, math.radians(obj.angle))
    if motion in TRANSLATIONS:
        dx, dy = TRANSLATIONS[motion]
        x, y = obj.x + dx * rate * steps, obj.y + dy * rate * steps
    elif motion == "zoom_in":
        radius = obj.radius * np.exp(rate * steps)
    elif motion == "zoom_out":
        radius = obj.radius * np.exp(-rate * steps)
    elif motion == "rotate_cw":
        angle = angle + np.radians(rate) * steps
    elif motion == "rotate_ccw":
        angle = angle - np.radians(rate) * steps
    return x, y, radius, angle


def _draw(canvas: np.ndarray, obj: ObjectSpec, motion: str, rate: float, grid: tuple[np.ndarray, np.ndarray]) -> None:
    """Alpha-blend ``obj`` into ``canvas`` float32 ``(t, h, w, 3)`` in place (t = 1 for a still object).

    Only the box the object covers over all frames is computed, which keeps small objects cheap.
    """
    frames, height, width = canvas.shape[:3]
    trajectory = object_trajectory(obj, motion, rate, frames)
    cx, cy, radius, angle = (a.reshape(frames, 1, 1).astype(np.float32) for a in trajectory)
    reach = SHAPE_EXTENT * trajectory[2] + 1.0  # pixels from the centre the shape can cover, per frame
    x0, x1 = int(np.floor((trajectory[0] - reach).min())), int(np.ceil((trajectory[0] + reach).max()))
    y0, y1 = int(np.floor((trajectory[1] - reach).min())), int(np.ceil((trajectory[1] + reach).max()))
    x0, x1, y0, y1 = max(0, x0), min(width, x1), max(0, y0), min(height, y1)
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = grid[0][:, y0:y1, x0:x1], grid[1][:, y0:y1, x0:x1]
    alpha, mix = object_coverage(obj.shape, obj.texture, xs - cx, ys - cy, radius, angle)
    alpha = alpha[..., None]
    colour = np.asarray(COLOURS[obj.colour], dtype=np.float32)
    paint = colour if mix is None else colour * (1.0 - (1.0 - TEXTURE_SHADE) * mix[..., None])
    region = canvas[:, y0:y1, x0:x1]
    region += alpha * (paint - region)


def object_coverage(shape: str, texture: str, dx: np.ndarray, dy: np.ndarray, radius: np.ndarray | float,
                    angle: np.ndarray | float) -> tuple[np.ndarray, np.ndarray | None]:
    """Coverage ``alpha`` in [0, 1] (1-pixel antialiased edge) and texture dark-shade weight (``None`` when solid) of
    a shape at pixel offsets ``dx, dy`` from its centre (y down), ``radius`` pixels, ``angle`` radians clockwise on
    screen; all broadcast together. The object's colour at a pixel is ``colour * (1 - (1 - TEXTURE_SHADE) * mix)``."""
    cos, sin = np.cos(angle), np.sin(angle)
    u = (cos * dx + sin * dy) / radius  # rotate by -angle into the object's frame, in object units
    v = (-sin * dx + cos * dy) / radius
    alpha = np.clip(0.5 - SHAPE_SDFS[shape](u, v) * radius, 0.0, 1.0)
    return alpha, _texture_mix(texture, u, v)


def _background(spec: BackgroundSpec, height: int, width: int) -> np.ndarray:
    """Background float32 ``(h, w, 3)`` in [0, 255]."""
    base = np.asarray(BACKGROUND_COLOURS[spec.colour], dtype=np.float32)
    toward_middle = -1.0 if base.mean() > 128 else 1.0  # patterns on very light / dark colours must not clip
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = math.radians(spec.angle)
    along = xs * math.cos(theta) + ys * math.sin(theta)
    if spec.kind == "solid":
        level = np.zeros((height, width), np.float32)
    elif spec.kind == "gradient":
        span = abs(width * math.cos(theta)) + abs(height * math.sin(theta))
        shift = spec.shift if spec.colour == "gray" else toward_middle * abs(spec.shift)
        level = (along - along.min()) / max(span, 1.0) * shift
    else:
        if spec.kind == "striped":
            pattern = np.tanh(3.0 * np.sin(2 * math.pi * along / spec.period))  # in [-1, 1]
        elif spec.kind == "checkered":
            half = spec.period / 2
            pattern = np.where(np.sin(math.pi * xs / half) * np.sin(math.pi * ys / half) >= 0, 1.0, -1.0)
        else:  # noise: a smooth random field plus a little grain, about [-1, 1]
            import cv2  # OpenCV is imported when a noise background is drawn, not with the module

            rng = np.random.default_rng(spec.noise_seed)
            cells = rng.standard_normal((NOISE_CELLS + 1, NOISE_CELLS + 1)).astype(np.float32)
            pattern = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC) * 0.6
            pattern = pattern + rng.standard_normal((height, width)).astype(np.float32) * NOISE_GRAIN
        level = toward_middle * (pattern + 1.0) / 2.0 * BACKGROUND_CONTRAST
    return np.clip(base + level[..., None], 0.0, 255.0).astype(np.float32)


def render_background(scene: Scene, config: SyntheticConfig) -> np.ndarray:
    """What ``scene`` shows without its main object (background and distractors) as uint8 ``(h, w, 3)``."""
    return np.clip(still_frame(scene, config) + 0.5, 0, 255).astype(np.uint8)


def render_scene(scene: Scene, config: SyntheticConfig) -> np.ndarray:
    """The frames of ``scene`` as uint8 ``(t, h, w, 3)``."""
    canvas = np.repeat(still_frame(scene, config)[None], config.frames, axis=0)
    _draw(canvas, scene.main, scene.motion, scene.rate, pixel_grid(config))
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def pixel_grid(config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(ys, xs)``, each float32 ``(1, h, w)``."""
    ys, xs = np.mgrid[0:config.height, 0:config.width].astype(np.float32) + 0.5
    return ys[None], xs[None]


def still_frame(scene: Scene, config: SyntheticConfig) -> np.ndarray:
    """What stays put in ``scene``: the background with the distractors, float32 ``(h, w, 3)`` in [0, 255]."""
    still = _background(scene.background, config.height, config.width)[None].copy()
    for obj in scene.distractors:
        _draw(still, obj, "still", 0.0, pixel_grid(config))
    return still[0]


# ----------------------------------------------------------------------------------------------------------------
# Dataset and writers
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SyntheticClip:
    """A rendered clip: uint8 frames ``(t, h, w, 3)`` and its scene (caption, labels)."""

    frames: np.ndarray
    scene: Scene = field(repr=False)


class SyntheticVideoDataset(Dataset):
    """Generated clips rendered on the fly from their clip id; nothing is stored.

    Sample dict: ``{"video": float32 (3, t, h, w) in [-1, 1], "caption": str, "path": "synthetic://<split>/<id>",
    "fps": int, "frame_stride": int, "motion": str, "labels": dict}`` (labels: :meth:`Scene.labels`).
    """

    def __init__(self, config: SyntheticConfig, split: str = "train") -> None:
        self.config = config
        self.split = split
        self.clip_ids = split_clip_ids(config, split)

    def __len__(self) -> int:
        return len(self.clip_ids)

    def scene(self, index: int) -> Scene:
        return make_scene(self.config, self.split, int(self.clip_ids[index]))

    def clip(self, index: int) -> SyntheticClip:
        scene = self.scene(index)
        return SyntheticClip(render_scene(scene, self.config), scene)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} clips")
        clip = self.clip(index)
        stride = clip.scene.frame_stride if self.config.frame_strides != (1,) else self.config.frame_stride
        return {"video": frames_to_video(clip.frames), "caption": clip.scene.caption,
                "path": clip_path(self.split, clip.scene.clip_id), "fps": max(1, self.config.fps // stride),
                "frame_stride": stride, "motion": clip.scene.motion, "labels": clip.scene.labels()}


def clip_path(split: str, clip_id: int) -> str:
    return f"synthetic://{split}/{clip_id:08d}"


def clip_name(split: str, clip_id: int) -> str:
    return f"{split}_{clip_id:08d}"


LABEL_COLUMNS = ("clip_id", "split", "motion", "shape", "colour", "texture", "background", "background_colour",
                 "num_distractors", "rate", "motion_only_caption", "frame_stride")


def write_video_split(config: SyntheticConfig, out_dir: str | os.PathLike, split: str = "train",
                      progress: bool = True) -> Path:
    """Write ``split`` as ``out_dir/videos/<split>_<id>.mp4`` plus the generic index ``out_dir/<split>.csv``
    (columns ``path, caption, fps`` and the labels). Existing videos are kept (they are deterministic), so an
    interrupted run can simply be repeated. Returns the index path."""
    dataset = SyntheticVideoDataset(config, split)
    out_dir = Path(out_dir)
    rows = []
    for index in tqdm(range(len(dataset)), desc=f"writing {split} clips", unit="clip", disable=not progress):
        scene = dataset.scene(index)
        relative = Path("videos") / f"{clip_name(split, scene.clip_id)}.mp4"
        if not (out_dir / relative).is_file():
            save_video(render_scene(scene, config), out_dir / relative, fps=config.fps)
        rows.append({"path": relative.as_posix(), "caption": scene.caption, "fps": config.fps, **scene.labels()})
    index_path = write_table(rows, out_dir / f"{split}.csv", ["path", "caption", "fps", *LABEL_COLUMNS])
    _write_config(config, out_dir / f"{split}_config.json")
    return index_path


PROMPTS_FILE = "test_prompts.txt"
PROMPT_LABELS_FILE = "labels.jsonl"


def write_prompt_images(config: SyntheticConfig, out_dir: str | os.PathLike, split: str = "test",
                        progress: bool = True) -> Path:
    """Write the first frame of each clip of ``split`` as ``out_dir/<split>_<id>.png`` and the captions as
    ``out_dir/test_prompts.txt`` (one per line, in sorted image-name order, the released prompts-folder format),
    plus ``out_dir/labels.jsonl`` (image name and labels per line, same order). Returns the prompts file path."""
    dataset = SyntheticVideoDataset(config, split)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for index in tqdm(range(len(dataset)), desc=f"writing {split} prompts", unit="image", disable=not progress):
        clip = dataset.clip(index)
        name = f"{clip_name(split, clip.scene.clip_id)}.png"
        with atomic_path(out_dir / name) as tmp:
            Image.fromarray(clip.frames[0]).save(tmp, format="PNG")
        entries.append((name, clip.scene))
    entries.sort(key=lambda entry: entry[0])
    prompts = out_dir / PROMPTS_FILE
    with atomic_path(prompts) as tmp:
        tmp.write_text("".join(f"{scene.caption}\n" for _, scene in entries), encoding="utf-8")
    with atomic_path(out_dir / PROMPT_LABELS_FILE) as tmp:
        tmp.write_text("".join(json.dumps({"image": name, "caption": scene.caption, **scene.labels()}) + "\n"
                               for name, scene in entries), encoding="utf-8")
    return prompts


def _write_config(config: SyntheticConfig, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
