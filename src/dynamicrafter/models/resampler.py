"""The query transformer P (the released "Resampler", a Perceiver-style resampler).

P turns the CLIP image tokens F (b, 257, 1280) into text-aligned context tokens (b, t * 16, 1024): a set of
learned queries (16 per frame for the video version) attends to [F; queries] in every layer (paper Sec. 3.1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dynamicrafter.config import ResamplerConfig


class PerceiverAttention(nn.Module):
    """Queries attend to the concatenation of the (normalized) image tokens and the queries themselves."""

    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner_dim = dim_head * heads
        self.norm_image = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(dim, inner_dim * 2, bias=False)
        self.to_out = nn.Linear(inner_dim, dim, bias=False)

    def forward(self, image_tokens: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """image_tokens: (b, n, dim); latents: (b, l, dim) -> (b, l, dim)."""
        x = self.norm_image(image_tokens)
        latents = self.norm_latents(latents)
        b, length, _ = latents.shape
        q = self.to_q(latents)  # (b, l, inner)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)  # (b, n + l, inner) each
        q, k, v = (y.view(b, y.shape[1], self.heads, -1).transpose(1, 2) for y in (q, k, v))  # (b, heads, ., d)
        # q and k are each scaled by d^(-1/4) (as released: more stable in fp16 than dividing the product);
        # the softmax runs in float32.
        scale = 1.0 / math.sqrt(math.sqrt(self.dim_head))
        weight = (q * scale) @ (k * scale).transpose(-2, -1)  # (b, heads, l, n + l)
        weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
        out = (weight @ v).transpose(1, 2).reshape(b, length, -1)  # (b, l, inner)
        return self.to_out(out)


class ResamplerFeedForward(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear (no biases)."""

    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mult, bias=False)
        self.fc2 = nn.Linear(dim * mult, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(self.norm(x))))


class ResamplerLayer(nn.Module):
    def __init__(self, config: ResamplerConfig):
        super().__init__()
        self.attn = PerceiverAttention(config.dim, config.dim_head, config.heads)
        self.ff = ResamplerFeedForward(config.dim, config.ff_mult)


class Resampler(nn.Module):
    """P: CLIP image tokens (b, n, embedding_dim) -> context tokens (b, num_queries * video_length, output_dim)."""

    def __init__(self, config: ResamplerConfig):
        super().__init__()
        self.config = config
        num_latents = config.num_queries * (config.video_length or 1)
        self.latents = nn.Parameter(torch.empty(1, num_latents, config.dim))
        self.proj_in = nn.Linear(config.embedding_dim, config.dim)
        self.layers = nn.ModuleList(ResamplerLayer(config) for _ in range(config.depth))
        self.proj_out = nn.Linear(config.dim, config.output_dim)
        self.norm_out = nn.LayerNorm(config.output_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        nn.init.normal_(self.latents, std=self.config.dim**-0.5)

    @property
    def num_tokens(self) -> int:
        return self.latents.shape[1]

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(image_tokens)  # (b, n, dim)
        latents = self.latents.expand(image_tokens.shape[0], -1, -1)  # (b, l, dim)
        for layer in self.layers:
            latents = layer.attn(x, latents) + latents  # (b, l, dim)
            latents = layer.ff(latents) + latents  # (b, l, dim)
        return self.norm_out(self.proj_out(latents))  # (b, l, output_dim)
