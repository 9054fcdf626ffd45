"""The one denoiser of the project: network + guidance branches (+ temporal windows, + loops) -> D(z_t, t).

Samplers see a function ``denoiser(z_t, t) -> prediction`` (eps or v, after guidance) for the whole video. It is
built here, in layers, for the pipeline, training-time sample videos and evaluation alike:

1. batched branches: ``z_t`` (b, c, t, h, w) is repeated for the n guidance branches [conditional; unconditional;
   (unconditional text with the image)], each branch's VDG latents are concatenated, (n*b, 2c, t, h, w), and the
   network runs once on the whole batch;
2. guidance: the n predictions are combined by classifier-free guidance (:class:`~dynamicrafter.diffusion.guidance.
   Guidance`);
3. sliding temporal windows (:class:`~dynamicrafter.options.TemporalWindows`): for videos longer than the
   network's temporal length the guided predictions of overlapping windows are blended;
4. loops: ``"ring"``, the time axis is a circle (the network's own when one window holds the video, else the windows
   wrap around); ``"closed"``, the closing frame is frame 0 (:func:`~dynamicrafter.diffusion.windows.closed_loop`:
   the denoiser then takes the ``num_frames - 1`` distinct frames).

The network is any callable ``network(x, t, context, fs, circular)``; the caller decides its dtype, run-time controls
(lambda) and temporal mode, so this module knows no U-Net.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from dynamicrafter.diffusion.guidance import Guidance
from dynamicrafter.diffusion.windows import Denoiser, Frames, closed_loop, windowed_denoiser
from dynamicrafter.options import TemporalWindows

# (x (n*b, c_in, t, h, w), t (n*b,), context (n*b, n_ctx, d), fs (n*b,), circular) -> (n*b, c_out, t, h, w)
Network = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]
LOOPS = ("ring", "closed")


def make_denoiser(network: Network, *, context: torch.Tensor, concat: torch.Tensor | None, fs: torch.Tensor,
                  guidance: Guidance, num_frames: int, temporal_length: int,
                  windows: TemporalWindows | None = None, loop: str | None = None) -> Denoiser:
    """The guided denoiser of a video of ``num_frames`` frames.

    ``context`` (n*b, n_ctx, d), ``concat`` (n*b, c, num_frames, h, w) (VDG latents, None without VDG input) and
    ``fs`` (n*b,) hold the n = ``guidance.num_branches`` branches stacked along the batch. ``loop``: None, ``"ring"``
    or ``"closed"`` (see the module docstring).
    """
    if loop not in (None, *LOOPS):
        raise ValueError(f"loop must be None or one of {LOOPS}, got {loop!r}")
    n = guidance.num_branches
    frames_per_call = num_frames if windows is None else windows.window_size(num_frames, temporal_length)
    circular_network = loop == "ring" and frames_per_call == num_frames  # else the windows wrap around the circle

    def denoise_frames(z: torch.Tensor, t: torch.Tensor, frames: Frames) -> torch.Tensor:
        """Guided prediction for ``frames`` of the video (a slice, or indices wrapping around a circle).

        The VDG latents are taken at ``frames``; the context is not: P's per-frame image tokens are used in
        window-relative order (frame k of the window gets token group k, as in a plain run of that length).
        """
        x = z.repeat(n, 1, 1, 1, 1)  # (n*b, c, t', h, w)
        if concat is not None:
            x = torch.cat([x, concat[:, :, frames]], dim=1)  # (n*b, 2c, t', h, w)
        return guidance.combine(network(x, t.repeat(n), context, fs, circular_network))  # (b, c, t', h, w)

    if windows is None:
        denoise = functools.partial(denoise_frames, frames=slice(None))
    else:
        denoise = windowed_denoiser(windows, denoise_frames, num_frames, temporal_length, circular=loop == "ring")
    if loop == "closed":
        denoise = closed_loop(denoise)
    return denoise


__all__ = ["LOOPS", "Network", "make_denoiser"]
