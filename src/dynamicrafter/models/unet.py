"""The 3D U-Net of DynamiCrafter (VideoCrafter-style video LDM denoiser).

The network knows no noise schedule: it maps noisy latents, a timestep, context tokens and the frame stride / fps
to a prediction (eps or v, decided by the training objective, not by the network).

Tensor layout at the interface: ``(b, c, t, h, w)``. Inside, frames are folded into the batch, ``(b*t, c, h, w)``,
for the 2D layers; temporal layers unfold them to ``(b, c, t, h, w)``.

Per level of ``channel_mult`` the encoder has ``num_res_blocks`` layers of
``ResBlock (+ temporal conv) -> SpatialTransformer -> TemporalTransformer`` (transformers only at the
``attention_resolutions``), then a strided-conv downsample; the decoder mirrors it with skip connections.

Frame order reaches the network through the temporal convolutions (zero-padded at the first and last frame), the
relative positions of temporal attention (when used) and P's per-frame image tokens. A call with
``UNetControls(circular=True)`` makes the time axis a circle instead: the convolutions pad with the frames from the
other end and relative distances wrap, so the last frame is the first frame's neighbour (seamless loops).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dynamicrafter.config import UNetConfig
from dynamicrafter.errors import ConfigError
from dynamicrafter.models.attention import Attention, RelativePosition, SpatialTransformer, TemporalTransformer
from dynamicrafter.models.controls import AS_TRAINED, UNetControls


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t f_i) | sin(t f_i)]``, ``f_i = max_period^(-i / (dim/2))``; (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]  # (N, half)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2*half)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (the released ResBlock normalization)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


class EmbeddingMLP(nn.Module):
    """Sinusoidal features -> Linear -> SiLU -> Linear (time embedding, fs embedding)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TemporalConvLayer(nn.Module):
    """GroupNorm -> SiLU -> (Dropout) -> Conv3d with kernel (3, 1, 1): mixes neighbouring frames per pixel."""

    def __init__(self, channels: int, norm_groups: int, dropout: float):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels)
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor, circular: bool = False) -> torch.Tensor:
        """x: (b, c, t, h, w); ``circular``: pad time by wrapping around (frame t-1 before 0), not with zeros."""
        h = self.dropout(F.silu(self.norm(x)))  # (b, c, t, h, w)
        # The (3, 1, 1) Conv3d computed as a (3, 1) Conv2d over (t, h*w): same weights and result, but CPUs run
        # 2D convolutions through oneDNN while 3D ones fall back to a slow kernel.
        b, c, t, hh, ww = h.shape
        h = h.reshape(b, c, t, hh * ww)  # (b, c, t, hw)
        if circular:
            h = torch.cat([h[:, :, -1:], h, h[:, :, :1]], dim=2)  # (b, c, t + 2, hw): frame t-1 before 0, 0 after t-1
        out = F.conv2d(h, self.conv.weight.squeeze(-1), self.conv.bias, padding=(0 if circular else 1, 0))
        return out.view(b, -1, t, hh, ww)


class TemporalConvBlock(nn.Module):
    """Four temporal conv layers with a residual connection (the first without dropout); (b, c, t, h, w)."""

    TEMPORAL_DROPOUT = 0.1  # fixed in the released code, independent of the U-Net dropout

    def __init__(self, channels: int, norm_groups: int):
        super().__init__()
        self.layers = nn.ModuleList(
            TemporalConvLayer(channels, norm_groups, 0.0 if i == 0 else self.TEMPORAL_DROPOUT) for i in range(4)
        )

    def forward(self, x: torch.Tensor, circular: bool = False) -> torch.Tensor:
        h = x
        for layer in self.layers:
            h = layer(h, circular)  # (b, c, t, h, w)
        return x + h


class ResBlock(nn.Module):
    """GN-SiLU-Conv, + time embedding, GN-SiLU-Dropout-Conv, + skip; then the temporal conv block."""

    def __init__(self, channels: int, emb_dim: int, out_channels: int, dropout: float, norm_groups: int,
                 temporal_conv: bool, gradient_checkpointing: bool = False):
        super().__init__()
        self.in_norm = GroupNorm32(norm_groups, channels)
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels)
        self.out_norm = GroupNorm32(norm_groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        self.temporal_conv = TemporalConvBlock(out_channels, norm_groups) if temporal_conv else None
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int, use_temporal: bool = True,
                circular: bool = False) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():  # also frozen blocks in eval mode
            return checkpoint(self._forward, x, emb, num_frames, use_temporal, circular, use_reentrant=False)
        return self._forward(x, emb, num_frames, use_temporal, circular)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int, use_temporal: bool,
                 circular: bool) -> torch.Tensor:
        h = self.in_conv(F.silu(self.in_norm(x)))  # (bt, c_out, h, w)
        h = h + self.emb_proj(F.silu(emb)).to(h.dtype)[:, :, None, None]  # (bt, c_out, h, w)
        h = self.out_conv(self.dropout(F.silu(self.out_norm(h))))  # (bt, c_out, h, w)
        h = self.skip(x) + h  # (bt, c_out, h, w)
        if self.temporal_conv is not None and use_temporal:
            h = _unfold_frames(h, num_frames)  # (b, c_out, t, h, w)
            h = _fold_frames(self.temporal_conv(h, circular))  # (bt, c_out, h, w)
        return h


class Downsample(nn.Module):
    """3x3 convolution with stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _fold_frames(x: torch.Tensor) -> torch.Tensor:
    """(b, c, t, h, w) -> (b*t, c, h, w)."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _unfold_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(b*t, c, h, w) -> (b, c, t, h, w)."""
    bt, c, h, w = x.shape
    return x.reshape(bt // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)


class UNetLayer(nn.ModuleList):
    """One U-Net layer: a sequence of ResBlock / SpatialTransformer / TemporalTransformer / Up- or Downsample."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, num_frames: int,
                use_temporal: bool = True, controls: UNetControls = AS_TRAINED) -> torch.Tensor:
        for module in self:
            if isinstance(module, ResBlock):
                h = module(h, emb, num_frames, use_temporal, controls.circular)
            elif isinstance(module, SpatialTransformer):
                h = module(h, context, controls)
            elif isinstance(module, TemporalTransformer):
                if use_temporal:
                    h = _fold_frames(module(_unfold_frames(h, num_frames), controls))
            else:
                h = module(h)
        return h


class UNet3D(nn.Module):
    """The denoiser epsilon_theta / v_theta(z_t, t, context, fs) of DynamiCrafter."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        mc = c.model_channels
        emb_dim = 4 * mc
        self.time_embed = EmbeddingMLP(mc, emb_dim)
        self.fs_embed = EmbeddingMLP(mc, emb_dim) if c.fs_condition else None
        self.conv_in = nn.Conv2d(c.in_channels, mc, 3, padding=1)
        self.init_attn = (
            TemporalTransformer(mc, c.init_attn_heads, c.num_head_channels, c.transformer_depth, use_linear=False,
                                norm_groups=c.norm_groups, causal=False,
                                relative_position=c.use_relative_position, temporal_length=c.temporal_length,
                                gradient_checkpointing=c.gradient_checkpointing)
            if c.addition_attention else None
        )

        self.input_blocks = nn.ModuleList()
        skip_channels = [mc]
        ch, ds = mc, 1
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                self.input_blocks.append(self._layer(ch, mult * mc, ds))
                ch = mult * mc
                skip_channels.append(ch)
            if level != len(c.channel_mult) - 1:
                self.input_blocks.append(UNetLayer([Downsample(ch)]))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = self._layer(ch, ch, ds, force_attention=True)
        self.middle_block.append(self._resblock(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks + 1):
                layer = self._layer(ch + skip_channels.pop(), mult * mc, ds)
                ch = mult * mc
                if level and i == c.num_res_blocks:
                    layer.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(layer)

        self.out_norm = GroupNorm32(c.norm_groups, ch)
        self.conv_out = nn.Conv2d(mc, c.out_channels, 3, padding=1)
        for name, module in self.named_modules():
            if isinstance(module, Attention):
                module.layer_name = name  # per-layer controls address the layers by these names
        self.initialize_weights()

    def _resblock(self, channels: int, out_channels: int) -> ResBlock:
        c = self.config
        return ResBlock(channels, 4 * c.model_channels, out_channels, c.dropout, c.norm_groups, c.temporal_conv,
                        c.gradient_checkpointing)

    def _layer(self, channels: int, out_channels: int, ds: int, force_attention: bool = False) -> UNetLayer:
        """ResBlock, plus spatial and temporal transformers when this resolution has attention.

        As released, only the ResBlocks use ``config.dropout``; the transformers run without dropout.
        """
        c = self.config
        layer = UNetLayer([self._resblock(channels, out_channels)])
        if ds in c.attention_resolutions or force_attention:
            heads, dim_head = out_channels // c.num_head_channels, c.num_head_channels
            layer.append(SpatialTransformer(
                out_channels, heads, dim_head, c.context_dim, c.transformer_depth, 0.0, c.use_linear,
                c.norm_groups, c.image_cross_attention, c.image_cross_attention_scale,
                c.image_cross_attention_scale_learnable, c.text_context_len, c.gradient_checkpointing))
            if c.temporal_attention:
                layer.append(TemporalTransformer(
                    out_channels, heads, dim_head, c.transformer_depth, 0.0, c.use_linear, c.norm_groups,
                    c.use_causal_attention, c.use_relative_position, c.temporal_length, c.gradient_checkpointing))
        return layer

    def initialize_weights(self) -> None:
        """All initialization in one place (as released): PyTorch defaults, zeros on every residual output."""
        for module in self.modules():
            if isinstance(module, RelativePosition):
                nn.init.xavier_uniform_(module.embeddings_table)
        zero = [self.conv_out]
        if self.fs_embed is not None:
            zero.append(self.fs_embed.linear_2)
        for module in self.modules():
            if isinstance(module, ResBlock):
                zero.append(module.out_conv)
            elif isinstance(module, (SpatialTransformer, TemporalTransformer)):
                zero.append(module.proj_out)
            elif isinstance(module, TemporalConvBlock):
                zero.append(module.layers[-1].conv)
        for module in zero:
            for p in module.parameters():
                nn.init.zeros_(p)

    def expand_context(self, context: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Context (b, n_ctx, d) -> per-frame context (b*t, n_ctx_frame, d).

        When the context holds exactly ``77 + image_tokens_per_frame * t`` tokens, frame i gets the text tokens and
        image tokens ``[16 i, 16 (i + 1))``; any other length is repeated unchanged for every frame (released rule).
        """
        b, n, d = context.shape
        text_len, per_frame = self.config.text_context_len, self.config.image_tokens_per_frame
        if n == text_len + per_frame * num_frames:
            text = context[:, :text_len].repeat_interleave(num_frames, dim=0)  # (bt, 77, d)
            image = context[:, text_len:].reshape(b * num_frames, per_frame, d)  # (bt, 16, d)
            return torch.cat([text, image], dim=1)  # (bt, 77 + 16, d)
        return context.repeat_interleave(num_frames, dim=0)  # (bt, n, d)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                fs: torch.Tensor | None = None, use_temporal: bool = True,
                controls: UNetControls = AS_TRAINED) -> torch.Tensor:
        """Predict eps or v.

        Args:
            x: (b, in_channels, t, h, w) noisy latents concatenated with the VDG latents.
            timesteps: (b,) diffusion timesteps in [0, num_timesteps).
            context: (b, n_ctx, context_dim) text tokens followed by image tokens.
            fs: (b,) frame stride or fps; ``default_fs`` when None.
            use_temporal: False runs the network as an image model (temporal layers bypassed; training stage i).
            controls: lambda per layer and the circular time axis for this call (default: as trained).
        Returns:
            (b, out_channels, t, h, w)
        """
        c = self.config
        if controls.circular and c.use_causal_attention:
            raise ConfigError("a circular time axis needs non-causal temporal attention; this model's is causal")
        b, _, t, _, _ = x.shape
        emb = self.time_embed(timestep_embedding(timesteps, c.model_channels).to(x.dtype))  # (b, 4mc)
        if self.fs_embed is not None:
            if fs is None:
                fs = torch.full((b,), c.default_fs, dtype=torch.long, device=x.device)
            emb = emb + self.fs_embed(timestep_embedding(fs, c.model_channels).to(x.dtype))  # (b, 4mc)
        emb = emb.repeat_interleave(t, dim=0)  # (bt, 4mc)
        context = self.expand_context(context, t)  # (bt, n_ctx_frame, d)

        h = self.conv_in(_fold_frames(x))  # (bt, mc, h, w)
        if self.init_attn is not None and use_temporal:
            h = _fold_frames(self.init_attn(_unfold_frames(h, t), controls))  # (bt, mc, h, w)
        skips = [h]
        for layer in self.input_blocks:
            h = layer(h, emb, context, t, use_temporal, controls)  # (bt, c_l, h_l, w_l)
            skips.append(h)
        h = self.middle_block(h, emb, context, t, use_temporal, controls)  # (bt, c_max, h_min, w_min)
        for layer in self.output_blocks:
            h = layer(torch.cat([h, skips.pop()], dim=1), emb, context, t, use_temporal, controls)  # (bt, c_l, ..)
        out = self.conv_out(F.silu(self.out_norm(h)))  # (bt, out_channels, h, w)
        return _unfold_frames(out, t)  # (b, out_channels, t, h, w)

    # ------------------------------------------------------------------------------------------------------------
    # The context stream's layers (lambda)
    # ------------------------------------------------------------------------------------------------------------

    def image_attention_layers(self) -> list[tuple[str, Attention]]:
        """The dual cross-attention layers in network order, with their names."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, Attention) and m.image_cross_attention]

    def image_attention_lambdas(self, controls: UNetControls = AS_TRAINED) -> dict[str, float]:
        """The effective lambda of every dual cross-attention layer under ``controls`` (paper Fig. 2)."""
        return {name: float(torch.as_tensor(m.image_lambda(controls)).detach())
                for name, m in self.image_attention_layers()}
