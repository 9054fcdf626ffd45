"""The networks of DynamiCrafter, held together (and nothing else: no sampler, optimizer or logging).

=================  =========================================  ======================================
attribute          network                                    released checkpoint prefix
=================  =========================================  ======================================
``unet``           3D U-Net denoiser                          ``model.diffusion_model.``
``image_proj``     query transformer P (Resampler)            ``image_proj_model.``
``vae``            SD AutoencoderKL, per frame                ``first_stage_model.``
``text_encoder``   OpenCLIP ViT-H/14 text tower               ``cond_stage_model.model.``
``image_encoder``  OpenCLIP ViT-H/14 image tower              ``embedder.model.visual.``
=================  =========================================  ======================================
"""

from __future__ import annotations

import torch
from torch import nn

from dynamicrafter.config import ModelConfig
from dynamicrafter.diffusion.schedule import NoiseSchedule
from dynamicrafter.models.clip import CLIPImageEncoder, CLIPTextEncoder
from dynamicrafter.models.resampler import Resampler
from dynamicrafter.models.unet import UNet3D
from dynamicrafter.models.vae import VideoVAE

COMPONENTS = ("unet", "image_proj", "vae", "text_encoder", "image_encoder")


class DynamiCrafter(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.unet = UNet3D(config.unet)
        self.image_proj = Resampler(config.resampler)
        self.vae = VideoVAE(config.vae)
        self.text_encoder = CLIPTextEncoder(config.text_encoder)
        self.image_encoder = CLIPImageEncoder(config.image_encoder)
        self.schedule = NoiseSchedule.from_config(config.schedule)
        self._check_widths()

    def _check_widths(self) -> None:
        c = self.config
        pairs = {
            "text_encoder.width vs unet.context_dim": (c.text_encoder.width, c.unet.context_dim),
            "resampler.output_dim vs unet.context_dim": (c.resampler.output_dim, c.unet.context_dim),
            "resampler.embedding_dim vs image_encoder.width": (c.resampler.embedding_dim, c.image_encoder.width),
            "vae.latent_channels vs unet.out_channels": (c.vae.latent_channels, c.unet.out_channels),
        }
        for name, (a, b) in pairs.items():
            if a != b:
                from dynamicrafter.errors import ConfigError

                raise ConfigError(f"inconsistent config: {name} ({a} != {b})")

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    def component(self, name: str) -> nn.Module:
        if name not in COMPONENTS:
            raise KeyError(f"unknown component '{name}', expected one of {COMPONENTS}")
        return getattr(self, name)
