"""Which motion does a video show? A flow-based classifier for the generated data set's motion classes.

For pairs of frames ``PAIR_STRIDE`` apart, dense optical flow (OpenCV Farneback) is computed; on the pixels that move,
a similarity motion about their centroid c is fitted by least squares,

    flow(p) = t + s (p - c) + r R90 (p - c),     R90 (x, y) = (-y, x)

(image coordinates, y down: r > 0 is a clockwise rotation on screen, s > 0 a growth). Summed over the clip this
gives the travelled distance |sum t| (pixels), the zoom and rotation displacements at the object's radius
(|sum s| rho, |sum r| rho, rho = RMS distance of the moving pixels from c) and the class of the largest relative to
its typical value, or ``still`` when every displacement is small.
The classifier is checked against the ground-truth clips of the generated data set (see the recipe report).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FLOW_SIZE = 128  # frames are resized to this size (square) before the flow
MOVING_THRESHOLD = 0.25  # pixels per frame pair (at FLOW_SIZE): slower pixels do not count as moving
# Typical clip-level displacements (pixels at FLOW_SIZE) of each kind of motion in the generated data set; the class
# is the kind with the largest displacement relative to its typical value, or "still" when all stay below
# STILL_FRACTION of it (calibrated on ground-truth clips, see the recipe report).
TYPICAL_DISPLACEMENT = {"translation": 20.0, "zoom": 4.0, "rotation": 10.0}
STILL_FRACTION = 0.3
MIN_MOVING_PIXELS = 12
PAIR_STRIDE = 1


@dataclass(frozen=True)
class MotionEstimate:
    label: str
    translation: tuple[float, float]  # summed (dx, dy), pixels at FLOW_SIZE
    zoom: float  # summed relative growth per frame (s), dimensionless
    rotation: float  # summed angle (radians, clockwise positive)
    radius: float  # RMS distance of the moving pixels from their centroid, pixels at FLOW_SIZE

    @property
    def displacements(self) -> dict[str, float]:
        return {"translation": float(np.hypot(*self.translation)), "zoom": abs(self.zoom) * self.radius,
                "rotation": abs(self.rotation) * self.radius}


def _flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def estimate_motion(frames: np.ndarray) -> MotionEstimate:
    """frames: uint8 (t, h, w, 3) -> the dominant motion of the moving object."""
    gray = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (FLOW_SIZE, FLOW_SIZE), interpolation=cv2.INTER_AREA)
            for f in frames]
    ys, xs = np.mgrid[0:FLOW_SIZE, 0:FLOW_SIZE].astype(np.float64)
    total_t = np.zeros(2)
    total_s = total_r = 0.0
    radii = []
    # flow between frames PAIR_STRIDE apart: displacements of a few pixels are estimated better than sub-pixel ones
    for a, b in zip(gray[:-PAIR_STRIDE:PAIR_STRIDE], gray[PAIR_STRIDE::PAIR_STRIDE]):
        flow = _flow(a, b).astype(np.float64)  # (h, w, 2)
        magnitude = np.hypot(flow[..., 0], flow[..., 1])
        moving = magnitude > MOVING_THRESHOLD
        if moving.sum() < MIN_MOVING_PIXELS:
            continue
        weight = magnitude[moving]
        px, py = xs[moving], ys[moving]
        cx, cy = np.average(px, weights=weight), np.average(py, weights=weight)
        dx, dy = px - cx, py - cy
        # unknowns (tx, ty, s, r); rows for the x and y flow components
        rows_x = np.stack([np.ones_like(dx), np.zeros_like(dx), dx, -dy], axis=1)
        rows_y = np.stack([np.zeros_like(dy), np.ones_like(dy), dy, dx], axis=1)
        a_mat = np.concatenate([rows_x, rows_y])
        rhs = np.concatenate([flow[..., 0][moving], flow[..., 1][moving]])
        (tx, ty, s, r), *_ = np.linalg.lstsq(a_mat, rhs, rcond=None)
        total_t += (tx, ty)
        total_s += s
        total_r += r
        radii.append(np.sqrt(np.average(dx**2 + dy**2, weights=weight)))  # RMS distance of the moving pixels
    radius = float(np.median(radii)) if radii else 0.0
    estimate = MotionEstimate("still", (float(total_t[0]), float(total_t[1])), float(total_s), float(total_r), radius)
    return MotionEstimate(_label(estimate), estimate.translation, estimate.zoom, estimate.rotation, radius)


def _label(e: MotionEstimate) -> str:
    score = {k: v / TYPICAL_DISPLACEMENT[k] for k, v in e.displacements.items()}
    kind = max(score, key=score.get)
    if score[kind] < STILL_FRACTION:
        return "still"
    if kind == "translation":
        dx, dy = e.translation
        if abs(dx) >= abs(dy):
            return "right" if dx > 0 else "left"
        return "down" if dy > 0 else "up"
    if kind == "zoom":
        return "zoom_in" if e.zoom > 0 else "zoom_out"
    return "rotate_cw" if e.rotation > 0 else "rotate_ccw"


def classify_motion(frames: np.ndarray) -> str:
    return estimate_motion(frames).label
