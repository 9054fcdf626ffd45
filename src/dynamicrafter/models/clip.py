"""The OpenCLIP ViT-H/14 text and image towers, built on ``transformers``' CLIP modules.

The released checkpoint stores the towers with OpenCLIP's names; :mod:`dynamicrafter.checkpoint` maps them onto
these modules with an explicit key map. What each encoder returns (as released):

* text: the hidden states after the penultimate block (23 of 24) followed by the final LayerNorm, (b, 77, 1024);
* image: all 257 tokens of the last block, before ``ln_post`` and without the projection, (b, 257, 1280).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from dynamicrafter.config import CLIPTextConfig, CLIPVisionConfig
from dynamicrafter.models.tokenizer import get_tokenizer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPTextEncoder(nn.Module):
    """Prompts -> text context tokens (b, 77, width)."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        hf_config = transformers.CLIPTextConfig(
            vocab_size=config.vocab_size, hidden_size=config.width, num_hidden_layers=config.layers_used,
            intermediate_size=int(config.width * config.mlp_ratio), num_attention_heads=config.heads,
            max_position_embeddings=config.context_length, hidden_act="gelu", layer_norm_eps=1e-5,
        )
        hf_config._attn_implementation = "sdpa"
        model = transformers.CLIPTextModel(hf_config)
        self.transformer = getattr(model, "text_model", model)  # transformers 4.x wraps it, 5.x does not

    @property
    def device(self) -> torch.device:
        return self.transformer.embeddings.token_embedding.weight.device

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """token_ids: (b, 77) int64 -> (b, 77, width)."""
        return self.transformer(input_ids=token_ids).last_hidden_state

    def encode(self, prompts: list[str]) -> torch.Tensor:
        tokens = get_tokenizer()(prompts).to(self.device)  # (b, 77)
        return self(tokens)


def _gaussian_kernel1d(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    kernel = torch.exp(-x.pow(2) / (2 * sigma**2))
    return kernel / kernel.sum()


def antialiased_bicubic_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (b, c, h, w) as the released encoder does (``kornia.geometry.resize(..., 'bicubic',
    align_corners=True, antialias=True)``).

    When downscaling by a factor f along an axis, the image is first blurred with a Gaussian of
    ``sigma = max((f - 1) / 2, 0.001)`` and kernel size ``max(int(4 sigma), 3)`` rounded up to odd (reflect
    padding, separable: along x, then along y); then bicubic interpolation with aligned corners.
    """
    h, w = x.shape[-2:]
    factors = (h / size[0], w / size[1])
    if max(factors) > 1:
        sigmas = [max((f - 1.0) / 2.0, 0.001) for f in factors]
        sizes = [int(max(4.0 * s, 3)) for s in sigmas]
        sizes = [k if k % 2 else k + 1 for k in sizes]
        c = x.shape[1]
        ky = _gaussian_kernel1d(sizes[0], sigmas[0], x.device, x.dtype)
        kx = _gaussian_kernel1d(sizes[1], sigmas[1], x.device, x.dtype)
        x = F.pad(x, (sizes[1] // 2, sizes[1] // 2, 0, 0), mode="reflect")
        x = F.conv2d(x, kx.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        x = F.pad(x, (0, 0, sizes[0] // 2, sizes[0] // 2), mode="reflect")
        x = F.conv2d(x, ky.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=True)


class CLIPImageEncoder(nn.Module):
    """Images (b, 3, h, w) in [-1, 1] -> visual tokens (b, 1 + (size/patch)^2, width) of the last block."""

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        hf_config = transformers.CLIPVisionConfig(
            hidden_size=config.width, num_hidden_layers=config.layers,
            intermediate_size=int(config.width * config.mlp_ratio), num_attention_heads=config.heads,
            image_size=config.image_size, patch_size=config.patch_size, hidden_act="gelu", layer_norm_eps=1e-5,
        )
        hf_config._attn_implementation = "sdpa"
        model = transformers.CLIPVisionModel(hf_config)
        self.transformer = getattr(model, "vision_model", model)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def num_tokens(self) -> int:
        return 1 + (self.config.image_size // self.config.patch_size) ** 2

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(b, 3, h, w) in [-1, 1] -> CLIP-normalized (b, 3, size, size)."""
        size = self.config.image_size
        x = antialiased_bicubic_resize(images, (size, size))
        x = (x + 1.0) / 2.0
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(images)  # (b, 3, 224, 224)
        return self.transformer(pixel_values=pixels).last_hidden_state  # (b, 257, width)
