"""Metrics that need no learned weights, computed for every generated video.

All inputs are uint8 frames ``(t, h, w, 3)`` and uint8 images ``(h, w, 3)``.

* temporal flicker: ``(1 / ((t-1) h w 3)) sum |x_{l+1} - x_l|`` over consecutive frames, in [0, 255] grey levels
  (lower is steadier; it also drops for videos that barely move, so read it together with motion);
* first-frame conformity: PSNR (dB, peak 255) and SSIM (Wang et al. 2004) of the first frame against the input image;
* motion magnitude: mean optical-flow magnitude (OpenCV Farneback, pixels per frame with the frames resized to a
  shorter side of 128), from :func:`dynamicrafter.data.motion.mean_flow_magnitude`.

SSIM follows Wang et al.'s reference ``ssim_index.m``: an 11x11 Gaussian window with sigma 1.5 (normalised to sum
1), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with ``L = 255``, statistics over the 'valid' window positions only,
the mean of the SSIM map; colour images are scored per RGB channel and averaged::

    SSIM(x, y) = ((2 mu_x mu_y + C1) (2 sigma_xy + C2)) / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dynamicrafter.media import resize_and_center_crop

PIXEL_MAX = 255.0
PSNR_CAP_DB = 100.0  # PSNR of identical images (MSE 0) is reported as this instead of infinity
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


@dataclass(frozen=True)
class ModelFreeMetrics:
    """Per-video results; first-frame fields are ``None`` when there is no input image to compare with."""

    temporal_flicker: float
    motion_magnitude: float
    first_frame_psnr: float | None = None
    first_frame_ssim: float | None = None


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (t, h, w, 3), got {frames.dtype} {frames.shape}")
    return frames


def temporal_flicker(frames: np.ndarray) -> float:
    """Mean absolute difference between consecutive frames, in [0, 255] grey levels (0 for a single frame)."""
    frames = _check_frames(frames)
    if frames.shape[0] < 2:
        return 0.0
    diffs = np.abs(np.diff(frames.astype(np.int16), axis=0))
    return float(diffs.mean())


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = PIXEL_MAX) -> float:
    """``10 log10(L^2 / MSE)`` in dB; identical images give :data:`PSNR_CAP_DB`."""
    if a.shape != b.shape:
        raise ValueError(f"PSNR needs images of one shape, got {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(data_range ** 2 / mse))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian ``(size,)``; the 2-D window is its outer product (separable)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = PIXEL_MAX, window: int = SSIM_WINDOW,
         sigma: float = SSIM_SIGMA, k1: float = SSIM_K1, k2: float = SSIM_K2) -> float:
    """Mean SSIM of two images ``(h, w)`` or ``(h, w, c)`` (channels averaged), Gaussian window, 'valid' region."""
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs images of one shape, got {a.shape} and {b.shape}")
    if min(a.shape[:2]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {a.shape[:2]}")
    x = torch.from_numpy(np.asarray(a, np.float64).reshape(a.shape[0], a.shape[1], -1)).permute(2, 0, 1)[:, None]
    y = torch.from_numpy(np.asarray(b, np.float64).reshape(b.shape[0], b.shape[1], -1)).permute(2, 0, 1)[:, None]
    g = torch.from_numpy(gaussian_window(window, sigma))

    def blur(z: torch.Tensor) -> torch.Tensor:  # separable Gaussian filter, 'valid' positions only
        z = F.conv2d(z, g.view(1, 1, -1, 1))
        return F.conv2d(z, g.view(1, 1, 1, -1))

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    # local (co)variances: E[xy] - E[x] E[y] under the Gaussian weights
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov_xy = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean(dim=(1, 2, 3)).mean())


def match_input_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The input image brought to the video's frame size as the pipeline conditions on it (resize + center crop)."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(resize_and_center_crop(Image.fromarray(image), height, width, mode="released"))


def motion_magnitude(frames: np.ndarray) -> float:
    """Mean optical-flow magnitude of the clip (Farneback at shorter side 128, via ``dynamicrafter.data.motion``);
    0 for a single frame."""
    from dynamicrafter.data.motion import mean_flow_magnitude

    frames = _check_frames(frames)
    return float(mean_flow_magnitude(frames)) if frames.shape[0] >= 2 else 0.0


def model_free_metrics(frames: np.ndarray, image: np.ndarray | None = None) -> ModelFreeMetrics:
    """All model-free metrics of one generated video (first-frame ones only when ``image`` is given)."""
    frames = _check_frames(frames)
    flicker, motion = temporal_flicker(frames), motion_magnitude(frames)
    if image is None:
        return ModelFreeMetrics(flicker, motion)
    reference = match_input_image(image, frames.shape[1], frames.shape[2])
    return ModelFreeMetrics(flicker, motion, psnr(frames[0], reference), ssim(frames[0], reference))
