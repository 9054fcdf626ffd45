"""The KL autoencoder of Stable Diffusion (LDM's ``AutoencoderKL``): encoder, decoder and the two 1x1 convolutions.

Parameter names are those of diffusers' ``AutoencoderKL`` (``encoder.down_blocks.0.resnets.0.norm1`` ...), so the
key maps of :mod:`dynamicrafter.keymap` and every saved file stay as they are, and the function is the same
operation for operation (``tests/test_networks.py`` compares the two). It is written here because importing any
part of diffusers' autoencoders imports its whole model zoo (about 500 modules), which every start of the command
line would pay for.

Images are ``(n, c, h, w)``; the encoder halves h and w at every level but the last.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_EPS = 1e-6  # GroupNorm epsilon of every block (as released)


class ResnetBlock2D(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, plus the input (through a 1x1 conv when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=NORM_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=NORM_EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (n, c_out, h, w)
        h = self.conv2(F.silu(self.norm2(h)))  # (n, c_out, h, w)
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x  # (n, c_out, h, w)
        return skip + h  # (n, c_out, h, w)


class SelfAttention2D(nn.Module):
    """Single-head self-attention over the h*w positions, after a GroupNorm, plus the input."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=NORM_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = x.view(n, c, h * w).transpose(1, 2)  # (n, hw, c)
        tokens = self.group_norm(tokens.transpose(1, 2)).transpose(1, 2)  # (n, hw, c)
        q, k, v = (proj(tokens).view(n, -1, 1, c).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)  # (n, 1, hw, c)
        out = out.transpose(1, 2).reshape(n, -1, c)  # (n, hw, c)
        out = self.to_out[1](self.to_out[0](out))  # (n, hw, c)
        return out.transpose(-1, -2).reshape(n, c, h, w) + x  # (n, c, h, w)


class MidBlock(nn.Module):
    """ResBlock -> self-attention -> ResBlock at the lowest resolution."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([SelfAttention2D(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)  # (n, c, h, w)
        x = self.attentions[0](x)  # (n, c, h, w)
        return self.resnets[1](x)  # (n, c, h, w)


class Downsample(nn.Module):
    """Pad right and bottom by one, then a stride-2 3x3 conv: h, w -> h/2, w/2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (n, c, h/2, w/2)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv: h, w -> 2h, 2w."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (n, c, 2h, 2w)


class EncoderLevel(nn.Module):
    """``num_blocks`` ResBlocks, then (except at the last level) a downsampling."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, groups: int, downsample: bool):
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.resnets = nn.ModuleList([ResnetBlock2D(widths[i], out_channels, groups) for i in range(num_blocks)])
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resnets:
            x = block(x)  # (n, c_out, h, w)
        for down in self.downsamplers or []:
            x = down(x)  # (n, c_out, h/2, w/2)
        return x


class DecoderLevel(nn.Module):
    """``num_blocks`` ResBlocks, then (except at the last level) an upsampling."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, groups: int, upsample: bool):
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.resnets = nn.ModuleList([ResnetBlock2D(widths[i], out_channels, groups) for i in range(num_blocks)])
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resnets:
            x = block(x)  # (n, c_out, h, w)
        for up in self.upsamplers or []:
            x = up(x)  # (n, c_out, 2h, 2w)
        return x


class Encoder(nn.Module):
    """Image -> mean and log-variance of the latent (``2 * latent_channels``), at 1 / 2^(levels - 1) the size."""

    def __init__(self, in_channels: int, latent_channels: int, widths: tuple[int, ...], num_blocks: int, groups: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        ins = (widths[0], *widths[:-1])
        self.down_blocks = nn.ModuleList([EncoderLevel(ins[i], w, num_blocks, groups, i < len(widths) - 1)
                                          for i, w in enumerate(widths)])
        self.mid_block = MidBlock(widths[-1], groups)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=NORM_EPS)
        self.conv_out = nn.Conv2d(widths[-1], 2 * latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)  # (n, w0, H, W)
        for level in self.down_blocks:
            x = level(x)  # (n, w_i, H / 2^i, W / 2^i), not halved at the last level
        x = self.mid_block(x)  # (n, w_last, h, w)
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # (n, 2 * latent, h, w)


class Decoder(nn.Module):
    """Latent -> image, the levels of the encoder in reverse with one more ResBlock each."""

    def __init__(self, latent_channels: int, out_channels: int, widths: tuple[int, ...], num_blocks: int,
                 groups: int):
        super().__init__()
        rev = tuple(reversed(widths))
        self.conv_in = nn.Conv2d(latent_channels, rev[0], 3, padding=1)
        self.mid_block = MidBlock(rev[0], groups)
        ins = (rev[0], *rev[:-1])
        self.up_blocks = nn.ModuleList([DecoderLevel(ins[i], w, num_blocks + 1, groups, i < len(rev) - 1)
                                        for i, w in enumerate(rev)])
        self.conv_norm_out = nn.GroupNorm(groups, widths[0], eps=NORM_EPS)
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)  # (n, w_last, h, w)
        x = self.mid_block(x)  # (n, w_last, h, w)
        for level in self.up_blocks:
            x = level(x)  # (n, w_i, 2h, 2w), not doubled at the last level
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # (n, out, H, W)


class KLAutoencoder(nn.Module):
    """Encoder + ``quant_conv`` (1x1, on the moments) and ``post_quant_conv`` (1x1, on the latent) + decoder."""

    def __init__(self, in_channels: int, latent_channels: int, widths: tuple[int, ...], num_blocks: int, groups: int):
        super().__init__()
        self.encoder = Encoder(in_channels, latent_channels, widths, num_blocks, groups)
        self.decoder = Decoder(latent_channels, in_channels, widths, num_blocks, groups)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
