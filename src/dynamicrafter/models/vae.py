"""The SD AutoencoderKL (f = 8, 4 latent channels) applied frame by frame (the network: :mod:`.autoencoder`).

Latents are scaled by ``scale_factor`` (0.18215): ``z = s * (mean + std * noise)`` when encoding and divided by it
before decoding. Videos are ``(b, c, t, h, w)``; frames are processed in chunks to bound memory.
"""

from __future__ import annotations

import torch
from torch import nn

from dynamicrafter.config import VAEConfig
from dynamicrafter.models.autoencoder import KLAutoencoder
from dynamicrafter.utils import randn

LOGVAR_RANGE = (-30.0, 20.0)  # the posterior's log-variance is clamped to this range (as released)


class VideoVAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        channels = tuple(config.base_channels * m for m in config.channel_mult)
        self.autoencoder = KLAutoencoder(config.in_channels, config.latent_channels, channels, config.num_res_blocks,
                                         config.norm_groups)

    @property
    def downscale(self) -> int:
        return self.config.downscale

    def encode_frames(self, frames: torch.Tensor, generator: torch.Generator | None = None,
                      sample: bool = True) -> torch.Tensor:
        """(n, 3, H, W) in [-1, 1] -> scaled latents (n, 4, H/8, W/8).

        ``sample=True`` draws from the posterior as released, ``z = s * (mean + exp(logvar / 2) * noise)`` with
        noise from ``generator``; ``sample=False`` returns ``s * mean``.
        """
        moments = self.autoencoder.quant_conv(self.autoencoder.encoder(frames))  # (n, 8, h, w)
        mean, logvar = moments.chunk(2, dim=1)
        if sample:
            std = torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE))
            noise = randn(mean.shape, generator, mean.device, mean.dtype)
            mean = mean + std * noise
        return self.config.scale_factor * mean

    def decode_frames(self, latents: torch.Tensor) -> torch.Tensor:
        """(n, 4, h, w) scaled latents -> (n, 3, 8h, 8w), roughly in [-1, 1]."""
        z = self.autoencoder.post_quant_conv(latents / self.config.scale_factor)
        return self.autoencoder.decoder(z)

    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True,
               chunk_size: int | None = None) -> torch.Tensor:
        """(b, 3, t, H, W) -> (b, 4, t, H/8, W/8); ``chunk_size`` frames at a time (None: all at once)."""
        return self._per_frame(video, lambda x: self.encode_frames(x, generator, sample), chunk_size)

    def decode(self, latents: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """(b, 4, t, h, w) -> (b, 3, t, 8h, 8w); ``chunk_size`` frames at a time (None: all at once)."""
        return self._per_frame(latents, self.decode_frames, chunk_size)

    @staticmethod
    def _per_frame(video: torch.Tensor, fn, chunk_size: int | None) -> torch.Tensor:
        b, c, t, h, w = video.shape
        frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (b*t, c, h, w)
        step = chunk_size or frames.shape[0]
        out = torch.cat([fn(frames[i : i + step]) for i in range(0, frames.shape[0], step)])  # (b*t, c', h', w')
        return out.reshape(b, t, *out.shape[1:]).permute(0, 2, 1, 3, 4)  # (b, c', t, h', w')
