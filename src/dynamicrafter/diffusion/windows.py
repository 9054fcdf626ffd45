"""Denoiser wrappers on the time axis: sliding temporal context windows (longer videos, on a line or a circle) and
closed loops.

The network is trained on clips of ``temporal_length`` frames (16). For a video of ``T > 16`` frames every
denoising step evaluates the network on overlapping windows of ``size`` frames, ``stride`` frames apart (the last
window is aligned to the end so that every frame is covered), and blends the per-window predictions (eps or v, after
classifier-free guidance) frame by frame:

    pred[f] = sum_w weight_w(f) pred_w[f] / sum_w weight_w(f)

``weighting="linear"``: a tent over each window (1, 2, ..., 2, 1), so a frame follows the window in which it sits
most centrally and neighbouring windows cross-fade across their overlap; ``"uniform"``: a plain average. The sampler
is unchanged: it sees one denoiser for the whole video.

Each window is conditioned exactly like a plain run of ``size`` frames: its slice of the noisy latents and of the
VDG latents, and P's per-frame image tokens in *window-relative* order (frame k of every window gets token group k,
the group P learned for position k of a training clip). Frames beyond P's 16 groups therefore reuse groups 0..15,
and a window as long as the whole video is the plain run, exactly.

On a circle (``circular=True``, a ring loop longer than one window) the windows start every ``stride`` frames all
the way round and the last ones wrap past frame ``T - 1`` to frame 0, so the wrap is inside a window like any
other step. (A ring loop that fits in one window is the network's own circular time axis instead, see
``dynamicrafter.models.controls.UNetControls``.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dynamicrafter.options import TemporalWindows

# (z for the frames of one window (b, c, len, h, w), t (b,), frames: slice of the video, or frame indices (len,)
# int64 for windows that wrap around a circle) -> prediction, same shape
Frames = slice | torch.Tensor
FrameDenoiser = Callable[[torch.Tensor, torch.Tensor, Frames], torch.Tensor]
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def window_frames(windows: TemporalWindows, num_frames: int, temporal_length: int,
                  circular: bool = False) -> list[Frames]:
    """The windows as slices, or on a circle as frame indices (int64 tensors, (size,))."""
    return [w if isinstance(w, slice) else torch.tensor(w, dtype=torch.long)
            for w in windows.windows(num_frames, temporal_length, circular)]


def window_weights(windows: TemporalWindows, num_frames: int, temporal_length: int,
                   circular: bool = False) -> list[torch.Tensor]:
    """Per window, the blending weight of each of its frames (float32, (size,)), normalized per video frame."""
    frames = window_frames(windows, num_frames, temporal_length, circular)
    size = windows.window_size(num_frames, temporal_length)
    if windows.weighting == "linear":
        k = torch.arange(size, dtype=torch.float32)
        raw = torch.minimum(k + 1, size - k)  # tent: 1, 2, ..., 2, 1
    else:
        raw = torch.ones(size)
    total = torch.zeros(num_frames)
    for w in frames:
        total[w] += raw  # (indices within one window are distinct)
    return [raw / total[w] for w in frames]


def windowed_denoiser(windows: TemporalWindows, denoise_frames: FrameDenoiser, num_frames: int,
                      temporal_length: int, circular: bool = False) -> Denoiser:
    """Wrap a frame-sliced denoiser into a denoiser of the whole video (b, c, num_frames, h, w):
    ``pred[f] = sum_w weight_w(f) pred_w[f]`` (weights normalized per frame)."""
    frames_of = window_frames(windows, num_frames, temporal_length, circular)
    weights = window_weights(windows, num_frames, temporal_length, circular)

    def denoise(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if z.shape[2] != num_frames:
            raise ValueError(f"windowed denoiser built for {num_frames} frames got {z.shape[2]}")
        out = torch.zeros_like(z)
        for frames, weight in zip(frames_of, weights):
            if isinstance(frames, torch.Tensor):
                frames = frames.to(z.device)
            pred = denoise_frames(z[:, :, frames], t, frames)  # (b, c, size, h, w)
            out[:, :, frames] += pred * weight.to(pred.device, pred.dtype).view(1, 1, -1, 1, 1)
        return out

    return denoise


def closed_loop(denoise: Denoiser) -> Denoiser:
    """A loop sampled on a circular timeline: denoiser of ``T + 1`` frames -> denoiser of the ``T`` distinct frames.

    The network sees the ``T`` frames with frame 0 appended as the closing frame ``T`` (where the loop's VDG input
    holds the image again), and frame 0 takes the mean of its two predictions, at position 0 and at position ``T``:

        pred[0] = (pred_net[0] + pred_net[T]) / 2,   pred[k] = pred_net[k]  (0 < k < T)

    The closing frame is then frame 0 exactly, at every step, and the wrap from frame ``T - 1`` back to frame 0 is a
    step the network takes between two neighbouring positions, like any other (MultiDiffusion's averaging of a frame
    seen twice, on a circle).
    """

    def denoise_loop(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        pred = denoise(torch.cat([z, z[:, :, :1]], dim=2), t)  # (b, c, T + 1, h, w)
        first = (pred[:, :, :1] + pred[:, :, -1:]) / 2  # (b, c, 1, h, w)
        return torch.cat([first, pred[:, :, 1:-1]], dim=2)  # (b, c, T, h, w)

    return denoise_loop
