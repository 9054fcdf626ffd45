"""Which motion does a clip of the generated data set show? An analysis-by-synthesis tracker.

The generator knows everything about a held-out clip except what the model does with it: the scene (background,
distractors, the main object's shape, colour, texture and frame-0 pose) is a function of the clip id. So each frame of
a video made from that clip's first frame is explained as the rendered scene with the main object at an unknown pose
``(x, y, log r, theta)`` (centre in pixels, log radius, angle in degrees, clockwise on screen):

    I_c(p) = g_c [G_sigma (S_c (1 - A))](p) + o_c + a_c [G_sigma (A (1 - m))](p) + b_c [G_sigma (A m)](p)

with S the still layer (background + distractors), A the object's coverage and m its texture's dark-shade weight at
that pose (:func:`dynamicrafter.data.synthetic.object_coverage`), G_sigma a Gaussian blur. For each candidate pose the
per-channel gain g, offset o and the object's light / dark colours a, b are solved in closed form (ridge regression
toward the rendered values), so colour drift, faded contrast and blur do not move the fitted pose. Each frame is
searched from the previous frame's pose (coarse position / scale grid, then the angle over one symmetry period, then
two finer grids); sigma is chosen per frame among neighbouring values.

From the track the clip's displacements are measured by least-squares lines over the frames (pixels over the clip):
translation |slope(x, y)| (T - 1), zoom slope(log r) (T - 1) r_mean (the edge's travel), rotation slope(theta)
(T - 1) r_mean (the arc at the radius). The largest relative to its threshold names the motion; ``still`` when all are
below; ``irregular`` when that coordinate does not follow a line (R^2 below :attr:`TrackerConfig.min_line_fit`:
shuffled frames, jitter); ``lost`` when the object is not found in too many frames. The angle is only read where the
fitted residual depends on it (the profile over one symmetry period is deep enough): a plain disc or ring has no
visible orientation, and blur can erase the texture that shows a round object's turn. Then ``rotation_observable`` is
False and a rotation prompt gets the verdict ``undetermined`` rather than a guess.

Per video it also measures conformity to the input (see :func:`conformity`): the colour error and shape IoU of the
first frame's object against the input, the object's colour error over the clip and the background flicker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from dynamicrafter.data import synthetic as syn

# Angle period used to follow the turn from frame to frame (degrees): the shape's own symmetry, measured from its
# outline (:func:`shape_period`); round shapes show their turn through the texture only, whose light and dark parts
# the fit may swap (a checkerboard turned by 90 degrees is its inverse). The generator keeps every turn per frame under
# half of the smallest shape symmetry.
ROUND_TEXTURE_SYMMETRY = {"solid": 360.0, "striped": 180.0, "checkered": 90.0, "dotted": 90.0}
CANDIDATE_PERIODS = (60.0, 72.0, 90.0, 120.0, 180.0, 360.0)
BLUR_REACH = 3.5  # a blurred map is computed this many sigmas beyond the object's support


@dataclass(frozen=True)
class TrackerConfig:
    """Search grids, the blur range and the decision thresholds (pixels at the clip's resolution)."""

    search_px: int = 4  # coarse position search, +- pixels around the previous frame's centre
    first_search_px: int = 6  # at frame 0 (around the input's pose)
    scale_step: float = 0.12  # coarse log-radius step
    angle_step: float = 4.0  # degrees, angle sweep over one symmetry period
    blurs: tuple[float, ...] = (0.0, 0.6, 1.0, 1.5, 2.0, 2.6, 3.3)  # Gaussian sigma, pixels
    ridge: float = 4.0  # weight (in pixels) of the prior gain 1, offset 0 and rendered colours
    min_visibility: float = 0.35  # fitted object contrast / rendered contrast below which a frame has lost it
    max_lost_fraction: float = 0.25
    min_angle_depth: float = 0.01  # angle-profile depth / object evidence below which the angle is not read
    min_angle_frames: float = 0.6  # fraction of the found frames that must show the angle
    translation_px: float = 2.5  # decision thresholds: displacement over the clip that counts as motion
    zoom_px: float = 1.0
    rotation_px: float = 3.0
    min_line_fit: float = 0.8  # the dominant coordinate must follow a line (R^2) ...
    max_backward_steps: float = 0.15  # ... and go back in at most this share of the frame steps


DEFAULT_TRACKER = TrackerConfig()


def shape_period(shape: str, tolerance: float = 0.02) -> float:
    """The smallest turn (degrees) that maps the shape's outline onto itself, measured on its coverage."""
    ys, xs = np.mgrid[-24:25, -24:25].astype(np.float64)
    reference, _ = syn.object_coverage(shape, "solid", xs, ys, 20.0, 0.0)
    for period in CANDIDATE_PERIODS:
        turned, _ = syn.object_coverage(shape, "solid", xs, ys, 20.0, math.radians(period))
        if np.abs(turned - reference).mean() < tolerance * reference.mean():
            return period
    return 360.0


@dataclass(frozen=True)
class Appearance:
    """What the generator knows about a clip: still layer and the main object (colours in [0, 1])."""

    still: np.ndarray  # (h, w, 3) float64
    shape: str
    texture: str
    colour: np.ndarray  # (3,)
    pose0: np.ndarray  # (4,) x, y, log r, angle (degrees) at frame 0
    period: float  # degrees: the angle is followed modulo this

    @classmethod
    def from_scene(cls, scene: syn.Scene, config: syn.SyntheticConfig) -> Appearance:
        main = scene.main
        round_shape = main.shape in syn.ROUND_SHAPES
        period = ROUND_TEXTURE_SYMMETRY[main.texture] if round_shape else shape_period(main.shape)
        pose0 = np.array([main.x, main.y, math.log(main.radius), main.angle], dtype=np.float64)
        return cls(syn.still_frame(scene, config).astype(np.float64) / 255.0, main.shape, main.texture,
                   np.asarray(syn.COLOURS[main.colour], np.float64) / 255.0, pose0, period)

    @property
    def size(self) -> tuple[int, int]:
        return self.still.shape[0], self.still.shape[1]

    def layers(self, poses: np.ndarray, region: tuple[slice, slice] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Coverage A and texture weight m, each (n, h', w'), of the object at ``poses`` (n, 4) over ``region``."""
        h, w = self.size
        region = region or (slice(0, h), slice(0, w))
        ys, xs = np.mgrid[region].astype(np.float64) + 0.5
        x, y, log_r, angle = (poses[:, i, None, None] for i in range(4))
        alpha, mix = syn.object_coverage(self.shape, self.texture, xs[None] - x, ys[None] - y, np.exp(log_r),
                                         np.radians(angle))
        return alpha, np.zeros_like(alpha) if mix is None else mix

    def paint(self, mix: np.ndarray) -> np.ndarray:
        """The object's colour (..., 3) where the texture weight is ``mix``."""
        return self.colour * (1.0 - (1.0 - syn.TEXTURE_SHADE) * mix[..., None])


def _blur_matrix(size: int, sigma: float) -> np.ndarray:
    """Row-normalised Gaussian blur as a (size, size) matrix (sigma 0: identity)."""
    if sigma <= 0:
        return np.eye(size)
    d = np.arange(size)[:, None] - np.arange(size)[None]
    k = np.exp(-0.5 * (d / sigma) ** 2)
    return k / k.sum(axis=1, keepdims=True)


def _span(low: float, high: float, size: int) -> slice:
    return slice(max(0, math.floor(low)), min(size, math.ceil(high)))


class PoseFitter:
    """Residuals of a frame against the scene with the object at candidate poses (closed-form colours per pose).

    Only a crop around the candidates is computed: outside it every candidate predicts the same (blurred still
    layer), whose sums are added as constants.
    """

    def __init__(self, appearance: Appearance, config: TrackerConfig = DEFAULT_TRACKER) -> None:
        self.appearance, self.config = appearance, config
        h, w = appearance.size
        self.blur = {s: (_blur_matrix(h, s), _blur_matrix(w, s)) for s in config.blurs}
        still = appearance.still.transpose(2, 0, 1)  # (3, h, w)
        self.blurred_still = {s: kh @ still @ kw.T for s, (kh, kw) in self.blur.items()}
        colour = appearance.colour
        self.prior = np.stack([np.ones(3), np.zeros(3), colour, colour * syn.TEXTURE_SHADE], axis=1)  # (3, 4)

    def _regions(self, poses: np.ndarray, sigma: float) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        """The candidates' support (inner) and that support grown by the blur's reach (outer)."""
        h, w = self.appearance.size
        reach = syn.SHAPE_EXTENT * np.exp(poses[:, 2].max()) + 1.0
        x0, x1, y0, y1 = poses[:, 0].min() - reach, poses[:, 0].max() + reach, poses[:, 1].min() - reach, \
            poses[:, 1].max() + reach
        grow = BLUR_REACH * sigma
        return ((_span(y0, y1, h), _span(x0, x1, w)),
                (_span(y0 - grow, y1 + grow, h), _span(x0 - grow, x1 + grow, w)))

    def residuals(self, frame: np.ndarray, poses: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """Ridge least squares per pose and channel on the regressors (still_c outside the object, 1, light part,
        dark part) -> (residual (n,), coefficients (n, 3, 4))."""
        inner, outer = self._regions(poses, sigma)
        alpha, mix = self.appearance.layers(poses, inner)
        kh, kw = self.blur[sigma]
        kh, kw = kh[outer[0], inner[0]], kw[outer[1], inner[1]]
        still = self.appearance.still[inner].transpose(2, 0, 1)  # (3, h', w')
        static = self.blurred_still[sigma]
        n = len(poses)
        background = (static[(slice(None), *outer)][None] - kh @ (still[None] * alpha[:, None]) @ kw.T).reshape(
            n, 3, -1)
        light, dark = (kh @ m @ kw.T for m in (alpha * (1.0 - mix), alpha * mix))
        y = frame[outer].reshape(-1, 3).T  # (3, N')
        columns = [background, np.ones((1, 3, 1)), light.reshape(n, 1, -1), dark.reshape(n, 1, -1)]
        # outside the crop every regressor but the still layer and the constant is zero
        outside_still = static.reshape(3, -1).sum(-1) - static[(slice(None), *outer)].reshape(3, -1).sum(-1)
        full = frame.reshape(-1, 3).T
        out_count = full.shape[1] - y.shape[1]
        static_flat = static.reshape(3, -1)
        out = {(0, 0): (static_flat**2).sum(-1) - (static[(slice(None), *outer)].reshape(3, -1) ** 2).sum(-1),
               (0, 1): outside_still, (1, 1): np.full(3, float(out_count))}
        gram = np.zeros((n, 3, 4, 4))
        for i in range(4):
            for j in range(i, 4):
                value = (columns[i] * columns[j]).sum(-1) if (i, j) != (1, 1) else np.full((1, 3), y.shape[1])
                gram[..., i, j] = gram[..., j, i] = value + out.get((i, j), 0.0)
        outside_y = (static_flat * full).sum(-1) - (static[(slice(None), *outer)].reshape(3, -1) * y).sum(-1)
        moments = np.stack([(background * y).sum(-1) + outside_y, np.broadcast_to(full.sum(-1), (n, 3)),
                            light.reshape(n, -1) @ y.T, dark.reshape(n, -1) @ y.T], axis=-1)
        return self._solve(gram, moments, (full**2).sum())

    def _solve(self, gram: np.ndarray, moments: np.ndarray, energy: float) -> tuple[np.ndarray, np.ndarray]:
        k = gram.shape[-1]
        ridge = self.config.ridge
        coef = np.linalg.solve(gram + ridge * np.eye(k), (moments + ridge * self.prior[:, :k])[..., None])[..., 0]
        quad = np.einsum("bcp,bcpq,bcq->b", coef, gram, coef)
        return energy - 2 * (coef * moments).sum((1, 2)) + quad, coef  # |y - X b|^2

    def background_residual(self, frame: np.ndarray, sigma: float) -> float:
        """Residual of the still layer alone (gain and offset fitted): the frame without any object."""
        still = self.blurred_still[sigma].reshape(3, -1)
        y = frame.reshape(-1, 3).T
        gram = np.empty((1, 3, 2, 2))
        gram[0, :, 0, 0], gram[0, :, 0, 1], gram[0, :, 1, 1] = (still**2).sum(-1), still.sum(-1), y.shape[1]
        gram[0, :, 1, 0] = gram[0, :, 0, 1]
        moments = np.stack([(still * y).sum(-1), y.sum(-1)], axis=-1)[None]
        return float(self._solve(gram, moments, (y**2).sum())[0][0])

    def rendered_energy(self, pose: np.ndarray, sigma: float) -> float:
        """Energy of the rendered object against the still layer at ``pose``: what a faithful frame shows."""
        alpha, mix = self.appearance.layers(pose[None])
        diff = (alpha[0, ..., None] * (self.appearance.paint(mix[0]) - self.appearance.still)).transpose(2, 0, 1)
        kh, kw = self.blur[sigma]
        return float(((kh @ diff @ kw.T) ** 2).sum())


@dataclass
class FrameFit:
    pose: np.ndarray  # (4,)
    sigma: float
    residual: float  # at the fitted pose
    evidence: float  # residual of the still layer alone minus ``residual``: what the object explains
    visibility: float  # sqrt(evidence / rendered energy): ~1 faithful, ~0 absent
    angle_depth: float  # (worst - best residual over the angle sweep) / evidence: 0 when the angle changes nothing
    coef: np.ndarray  # (3, 4) gain, offset, light, dark colours


def _grid(center: np.ndarray, steps: tuple[np.ndarray, ...]) -> np.ndarray:
    """Poses: ``center`` plus every combination of per-coordinate offsets."""
    mesh = np.meshgrid(*steps, indexing="ij")
    return center[None] + np.stack([m.ravel() for m in mesh], axis=1)


def _best(fitter: PoseFitter, frame: np.ndarray, poses: np.ndarray, sigma: float
          ) -> tuple[np.ndarray, float, np.ndarray]:
    residual, coef = fitter.residuals(frame, poses, sigma)
    i = int(np.argmin(residual))
    return poses[i], float(residual[i]), coef[i]


def _angle_offsets(period: float, step: float) -> np.ndarray:
    """Offsets ``k * step`` covering one period, centred on 0: (-period / 2, period / 2)."""
    k = math.ceil(period / 2 / step) - 1
    return step * np.arange(-k, k + 1, dtype=np.float64)


def _sweep_angle(fitter: PoseFitter, frame: np.ndarray, pose: np.ndarray, sigma: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The best angle over one period around ``pose``'s angle; returns the pose and the residual profile."""
    none = np.zeros(1)
    sweep = _grid(pose, (none, none, none, _angle_offsets(fitter.appearance.period, fitter.config.angle_step)))
    profile, _ = fitter.residuals(frame, sweep, sigma)
    return sweep[int(np.argmin(profile))], profile


def fit_frame(fitter: PoseFitter, frame: np.ndarray, previous: np.ndarray, sigma: float, search_px: int) -> FrameFit:
    """The object's pose in ``frame`` (float (h, w, 3) in [0, 1]), searched around the ``previous`` pose: the angle,
    then position and scale on a coarse grid, the angle again, then two finer joint grids."""
    cfg = fitter.config
    scales, unit, none = np.array([-cfg.scale_step, 0.0, cfg.scale_step]), np.array([-1.0, 0.0, 1.0]), np.zeros(1)
    pose, _ = _sweep_angle(fitter, frame, previous, sigma)
    shifts = np.arange(-search_px, search_px + 1, 2, dtype=np.float64)
    pose, _, _ = _best(fitter, frame, _grid(pose, (shifts, shifts, scales, none)), sigma)
    pose, _, _ = _best(fitter, frame, _grid(pose, (unit, unit, scales / 2, none)), sigma)
    pose, profile = _sweep_angle(fitter, frame, pose, sigma)
    for step in (0.5, 0.25):
        offsets = unit * step
        pose, residual, coef = _best(fitter, frame, _grid(pose, (offsets, offsets, offsets * cfg.scale_step / 2,
                                                                 offsets * cfg.angle_step / 2)), sigma)
    sigma, residual, coef = _best_sigma(fitter, frame, pose, sigma, residual, coef)
    evidence = max(fitter.background_residual(frame, sigma) - residual, 0.0)
    visibility = math.sqrt(evidence / max(fitter.rendered_energy(pose, sigma), 1e-9))
    depth = (float(profile.max()) - float(profile.min())) / max(evidence, 1e-9)
    return FrameFit(pose, sigma, residual, evidence, visibility, depth, coef)


def find_frame(fitter: PoseFitter, frame: np.ndarray, previous: np.ndarray, sigma: float) -> FrameFit:
    """Re-detection: the best of a search over the whole frame (2-pixel grid) and one around ``previous``."""
    h, w = fitter.appearance.size
    step = 2.0
    xs, ys = np.arange(step / 2, w, step), np.arange(step / 2, h, step)
    start = np.array([0.0, 0.0, previous[2], previous[3]])
    scales = np.array([-fitter.config.scale_step, 0.0, fitter.config.scale_step])
    pose, _, _ = _best(fitter, frame, _grid(start, (xs, ys, scales, np.zeros(1))), sigma)
    found = fit_frame(fitter, frame, pose, sigma, 1)
    local = fit_frame(fitter, frame, previous, sigma, fitter.config.search_px)
    return found if found.residual < local.residual else local


def _best_sigma(fitter: PoseFitter, frame: np.ndarray, pose: np.ndarray, sigma: float, residual: float,
                coef: np.ndarray) -> tuple[float, float, np.ndarray]:
    """The blur among ``sigma`` and its neighbours in the grid that fits ``pose`` best."""
    blurs = fitter.config.blurs
    i = blurs.index(sigma)
    for candidate in blurs[max(i - 1, 0): i + 2]:
        if candidate != sigma:
            r, c = fitter.residuals(frame, pose[None], candidate)
            if r[0] < residual:
                sigma, residual, coef = candidate, float(r[0]), c[0]
    return sigma, residual, coef


@dataclass
class Track:
    """Per-frame fits of one clip; the angle is followed modulo ``period`` degrees."""

    fits: list[FrameFit]
    period: float

    def _column(self, i: int) -> np.ndarray:
        return np.array([f.pose[i] for f in self.fits])

    @property
    def x(self) -> np.ndarray:
        return self._column(0)

    @property
    def y(self) -> np.ndarray:
        return self._column(1)

    @property
    def log_radius(self) -> np.ndarray:
        return self._column(2)

    @property
    def visibility(self) -> np.ndarray:
        return np.array([f.visibility for f in self.fits])

    def angle(self, min_depth: float) -> np.ndarray:
        """Degrees, NaN in frames whose angle profile is shallower than ``min_depth``."""
        readable = np.array([f.angle_depth >= min_depth for f in self.fits])
        return np.where(readable, self._column(3), np.nan)


def track_object(frames: np.ndarray, appearance: Appearance, config: TrackerConfig = DEFAULT_TRACKER) -> Track:
    """Track the main object through uint8 frames (t, h, w, 3)."""
    if frames.shape[1:3] != appearance.size:
        raise ValueError(f"frames of {frames.shape[1:3]} pixels do not match the scene's {appearance.size}")
    fitter = PoseFitter(appearance, config)
    pose, sigma = appearance.pose0, _first_sigma(fitter, frames[0].astype(np.float64) / 255.0, appearance.pose0)
    fits = []
    for t, frame in enumerate(frames.astype(np.float64) / 255.0):
        fit = fit_frame(fitter, frame, pose, sigma, config.first_search_px if t == 0 else config.search_px)
        if fit.visibility < config.min_visibility:  # jumped out of the search window, or gone
            fit = find_frame(fitter, frame, pose, sigma)
        if fit.visibility >= config.min_visibility:  # a lost frame does not move the search
            pose = fit.pose
        sigma = fit.sigma
        fits.append(fit)
    return Track(fits, appearance.period)


def _first_sigma(fitter: PoseFitter, frame: np.ndarray, pose: np.ndarray) -> float:
    residual = [fitter.residuals(frame, pose[None], s)[0][0] for s in fitter.config.blurs]
    return fitter.config.blurs[int(np.argmin(residual))]


# ----------------------------------------------------------------------------------------------------------------
# Motion from a track
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class MotionReading:
    """The motion a track shows. ``label``: one of the 9 motions, ``irregular`` or ``lost``."""

    label: str
    translation: tuple[float, float]  # pixels over the clip (x right, y down)
    zoom: float  # edge travel, pixels over the clip (> 0 grows)
    rotation: float  # arc at the radius, pixels over the clip (> 0 clockwise); nan when not observable
    line_fit: float  # R^2 of the dominant coordinate's line
    backward_steps: float  # share of the dominant coordinate's frame steps going back (more than half a mean step)
    rotation_observable: bool
    found_fraction: float
    scores: dict[str, float] = field(default_factory=dict)  # displacement / threshold per kind of motion

    def verdict(self, motion: str) -> str:
        """``correct`` / ``wrong`` / ``undetermined`` (a rotation prompt on a video whose object shows no angle and
        no other motion: turning and standing still look the same)."""
        if motion.startswith("rotate") and not self.rotation_observable and self.label in ("still", "irregular"):
            return "undetermined"
        return "correct" if self.label == motion else "wrong"


def _line(values: np.ndarray) -> tuple[float, float, float]:
    """Slope per frame, R^2 of the least-squares line through the finite ``values`` (index = frame) and the share of
    steps between consecutive finite values that go back by more than half the slope."""
    t = np.flatnonzero(np.isfinite(values)).astype(np.float64)
    if len(t) < 3:
        return 0.0, 0.0, 1.0
    v = values[t.astype(int)]
    slope, intercept = np.polyfit(t, v, 1)
    total = float(((v - v.mean()) ** 2).sum())
    fit = 1.0 - float(((v - slope * t - intercept) ** 2).sum()) / total if total > 0 else 1.0
    rates = np.diff(v) / np.diff(t)
    backward = float(np.mean(rates * np.sign(slope) < -0.5 * abs(slope)))
    return float(slope), fit, backward


def read_motion(track: Track, config: TrackerConfig = DEFAULT_TRACKER) -> MotionReading:
    """Classify a track into one of the 9 motions (or ``irregular`` / ``lost``)."""
    found = track.visibility >= config.min_visibility
    span = len(track.fits) - 1
    x, y, log_r = (np.where(found, v, np.nan) for v in (track.x, track.y, track.log_radius))
    angle = _unwrap(np.where(found, track.angle(config.min_angle_depth), np.nan), track.period)
    observable = bool(np.isfinite(angle).sum() >= config.min_angle_frames * max(found.sum(), 1))
    radius = float(np.exp(np.nanmean(log_r))) if found.any() else 0.0
    sx, sy = _line(x)[0], _line(y)[0]
    direction = np.array([sx, sy]) / max(math.hypot(sx, sy), 1e-9)
    lines = {"translation": _line(x * direction[0] + y * direction[1]), "zoom": _line(log_r),
             "rotation": _line(angle) if observable else (0.0, 0.0, 1.0)}
    pixels = {"translation": abs(lines["translation"][0]) * span, "zoom": abs(lines["zoom"][0]) * span * radius,
              "rotation": abs(math.radians(lines["rotation"][0])) * span * radius}
    thresholds = {"translation": config.translation_px, "zoom": config.zoom_px, "rotation": config.rotation_px}
    scores = {k: pixels[k] / thresholds[k] for k in pixels}
    kind = max(scores, key=scores.get)
    slope, fit, backward = lines[kind]
    found_fraction = float(found.mean())
    if found_fraction < 1.0 - config.max_lost_fraction:
        label = "lost"
    elif scores[kind] < 1.0:
        label = "still"
    elif fit < config.min_line_fit or backward > config.max_backward_steps:
        label = "irregular"
    else:
        label = _direction(kind, slope, (sx, sy))
    return MotionReading(label, (sx * span, sy * span), lines["zoom"][0] * span * radius,
                         math.radians(lines["rotation"][0]) * span * radius if observable else math.nan, fit,
                         backward, observable, found_fraction, scores)


def _direction(kind: str, slope: float, slope_xy: tuple[float, float]) -> str:
    if kind == "translation":
        sx, sy = slope_xy
        if abs(sx) >= abs(sy):
            return "right" if sx > 0 else "left"
        return "down" if sy > 0 else "up"
    if kind == "zoom":
        return "zoom_in" if slope > 0 else "zoom_out"
    return "rotate_cw" if slope > 0 else "rotate_ccw"


def _unwrap(angle: np.ndarray, period: float) -> np.ndarray:
    """Unwrap readable angles (NaN kept) so that consecutive readable values differ by under half a period."""
    out = angle.copy()
    last = math.nan
    for i, value in enumerate(angle):
        if not np.isfinite(value):
            continue
        if np.isfinite(last):
            value = last + ((value - last + period / 2) % period - period / 2)
        out[i] = last = value
    return out


def evaluate_motion(frames: np.ndarray, scene: syn.Scene, data: syn.SyntheticConfig,
                    config: TrackerConfig = DEFAULT_TRACKER) -> MotionReading:
    """The motion a video made from ``scene``'s first frame shows."""
    return read_motion(track_object(frames, Appearance.from_scene(scene, data), config), config)


# ----------------------------------------------------------------------------------------------------------------
# Conformity to the input
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Conformity:
    """Per video, against the input (the real clip's first frame); colours in 0-255 (RGB distance)."""

    first_colour_error: float  # |object colour in generated frame 0 - in the input|
    first_iou: float  # IoU of the object's mask in generated frame 0 and in the input
    clip_colour_error: float  # the object colour error, mean over the frames
    background_flicker: float  # mean |frame t+1 - frame t| away from the object (0 for a faithful clip)


def _input_layers(scene: syn.Scene, data: syn.SyntheticConfig) -> tuple[np.ndarray, np.ndarray, Appearance]:
    appearance = Appearance.from_scene(scene, data)
    alpha, mix = appearance.layers(appearance.pose0[None])
    return alpha[0], appearance.paint(mix[0]), appearance


def object_mask(frame: np.ndarray, still: np.ndarray, paint: np.ndarray) -> np.ndarray:
    """Estimated coverage in [0, 1] of a frame (h, w, 3): the position of each pixel between the still layer and
    the object's paint (both known), ``(I - S) . (F - S) / |F - S|^2``; equals the true coverage on a rendered frame."""
    diff = paint - still
    return np.clip(((frame - still) * diff).sum(-1) / np.maximum((diff**2).sum(-1), 1e-6), 0.0, 1.0)


def object_colours(frames: np.ndarray, track: Track, appearance: Appearance, min_visibility: float) -> np.ndarray:
    """The object's colour per frame (t, 3) in [0, 1]: the fitted light colour (blur and texture accounted for) where
    the object is found, else the mean of the pixels it should cover."""
    alphas, _ = appearance.layers(np.stack([f.pose for f in track.fits]))
    colours = []
    for frame, alpha, fit in zip(frames.astype(np.float64) / 255.0, alphas, track.fits):
        inside = alpha >= 0.5 if (alpha >= 0.5).any() else alpha >= alpha.max()
        colours.append(fit.coef[:, 2] if fit.visibility >= min_visibility else frame[inside].mean(axis=0))
    return np.stack(colours)


def conformity(frames: np.ndarray, scene: syn.Scene, data: syn.SyntheticConfig, track: Track | None = None,
               config: TrackerConfig = DEFAULT_TRACKER) -> Conformity:
    """Colour error, shape IoU, colour error over the clip and background flicker of a video (uint8 (t, h, w, 3))
    made from ``scene``'s first frame."""
    alpha, paint, appearance = _input_layers(scene, data)
    video = frames.astype(np.float64) / 255.0
    mask_in, mask_out = alpha >= 0.5, object_mask(video[0], appearance.still, paint) >= 0.5
    iou = float((mask_in & mask_out).sum() / max((mask_in | mask_out).sum(), 1))
    track = track or track_object(frames, appearance, config)
    errors = np.linalg.norm(object_colours(frames, track, appearance, config.min_visibility) - appearance.colour,
                            axis=1) * 255.0
    alphas, _ = appearance.layers(np.stack([f.pose for f in track.fits]))
    near = cv2.dilate((alphas >= 0.05).astype(np.uint8).max(axis=0), np.ones((5, 5), np.uint8)) > 0
    steps = np.abs(np.diff(video, axis=0))[:, ~near] if (~near).any() else np.zeros(1)
    return Conformity(float(errors[0]), iou, float(errors.mean()), float(steps.mean() * 255.0))


def motion_and_conformity(frames: np.ndarray, scene: syn.Scene, data: syn.SyntheticConfig,
                          config: TrackerConfig = DEFAULT_TRACKER) -> tuple[MotionReading, Conformity]:
    """The motion a video made from ``scene``'s first frame shows and its conformity to the input, from one track."""
    track = track_object(frames, Appearance.from_scene(scene, data), config)
    return read_motion(track, config), conformity(frames, scene, data, track, config)
