"""Attention layers of the 3D U-Net: the dual cross-attention and the spatial / temporal transformers.

Shapes: spatial layers see frames as a batch, ``(b*t, c, h, w)``; temporal layers see ``(b, c, t, h, w)`` and
attend over ``t`` at every pixel. Context tokens (cross-attention) are ``(b*t, n_ctx, context_dim)``: 77 text
tokens followed by the image tokens of P.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dynamicrafter.models.controls import AS_TRAINED, UNetControls


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads*d) -> (B, heads, N, d)."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads*d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class RelativePosition(nn.Module):
    """Learned embeddings of clipped relative distances (k - q) in [-max_distance, max_distance].

    ``circular``: positions on a circle of ``length_k`` (queries and keys alike), the distance is the shorter way
    round, signed: ``(k - q + length_k // 2) mod length_k - length_k // 2``.
    """

    def __init__(self, dim_head: int, max_distance: int):
        super().__init__()
        self.max_distance = max_distance
        self.embeddings_table = nn.Parameter(torch.empty(2 * max_distance + 1, dim_head))

    def forward(self, length_q: int, length_k: int, circular: bool = False) -> torch.Tensor:
        device = self.embeddings_table.device
        distance = torch.arange(length_k, device=device)[None, :] - torch.arange(length_q, device=device)[:, None]
        if circular:
            if length_q != length_k:
                raise ValueError(f"circular distances need as many queries as keys, got {length_q} and {length_k}")
            distance = (distance + length_k // 2) % length_k - length_k // 2
        index = distance.clamp(-self.max_distance, self.max_distance) + self.max_distance
        return self.embeddings_table[index]  # (length_q, length_k, dim_head)


class Attention(nn.Module):
    """Multi-head attention, optionally with DynamiCrafter's dual cross-attention.

    With ``image_cross_attention`` the context is split into text tokens ``c_txt`` (first ``text_context_len``) and
    image tokens ``c_img``; the queries attend to each separately and the outputs are summed (paper Eq. 3):

        out = Softmax(Q K_txt^T / sqrt(d)) V_txt + lambda * Softmax(Q K_img^T / sqrt(d)) V_img

    with ``lambda = s * (tanh(alpha) + 1)`` when ``alpha`` is learnable (256 model) and ``lambda = s`` otherwise;
    ``s`` is ``image_scale`` as trained, or the value the call's :class:`UNetControls` give for this layer
    (``layer_name``, set by the U-Net that holds it). Without ``image_cross_attention`` only the text tokens are
    attended. Without a context the layer is self-attention.
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        image_cross_attention: bool = False,
        image_scale: float = 1.0,
        image_scale_learnable: bool = False,
        text_context_len: int = 77,
        relative_position: bool = False,
        temporal_length: int | None = None,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.scale = dim_head**-0.5
        self.text_context_len = text_context_len
        self.image_cross_attention = image_cross_attention
        self.image_scale = image_scale  # s as trained (a config value, not a weight; calls may override it)
        self.layer_name = ""  # the name in the U-Net (set by UNet3D), for per-layer controls
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Linear(inner_dim, query_dim)
        self.dropout = nn.Dropout(dropout)
        if image_cross_attention:
            self.to_k_ip = nn.Linear(context_dim, inner_dim, bias=False)
            self.to_v_ip = nn.Linear(context_dim, inner_dim, bias=False)
            self.alpha = nn.Parameter(torch.zeros(())) if image_scale_learnable else None
        self.relative_position_k = self.relative_position_v = None
        if relative_position:
            if temporal_length is None:
                raise ValueError("relative-position attention needs temporal_length")
            self.relative_position_k = RelativePosition(dim_head, temporal_length)
            self.relative_position_v = RelativePosition(dim_head, temporal_length)

    def image_lambda(self, controls: UNetControls = AS_TRAINED) -> torch.Tensor | float:
        """The weight lambda of the image branch under ``controls`` (a tensor when it has a learnable gate)."""
        scale = controls.image_scale(self.layer_name, self.image_scale)
        if getattr(self, "alpha", None) is not None:
            return scale * (torch.tanh(self.alpha) + 1)
        return scale

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                controls: UNetControls = AS_TRAINED) -> torch.Tensor:
        """x: (B, N, query_dim); context: (B, M, context_dim) or None; mask: (N, N) bool, True = attend."""
        q = _split_heads(self.to_q(x), self.heads)  # (B, heads, N, d)
        if context is None:  # self-attention
            k, v = self.to_k(x), self.to_v(x)
            image_context = None
        else:
            text_context = context[:, : self.text_context_len]  # (B, 77, context_dim)
            image_context = context[:, self.text_context_len :] if self.image_cross_attention else None
            k, v = self.to_k(text_context), self.to_v(text_context)
        k, v = _split_heads(k, self.heads), _split_heads(v, self.heads)  # (B, heads, M, d)
        out = self._attend(q, k, v, mask, controls.circular)  # (B, heads, N, d)

        # lambda = 0 switches the context stream off exactly (the image branch is not computed at all)
        if image_context is not None and image_context.shape[1] > 0 and \
                controls.image_scale(self.layer_name, self.image_scale) != 0:
            k_ip = _split_heads(self.to_k_ip(image_context), self.heads)  # (B, heads, M_img, d)
            v_ip = _split_heads(self.to_v_ip(image_context), self.heads)
            out_ip = F.scaled_dot_product_attention(q, k_ip, v_ip, scale=self.scale)  # (B, heads, N, d)
            out = out + self.image_lambda(controls) * out_ip
        return self.dropout(self.to_out(_merge_heads(out)))  # (B, N, query_dim)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                circular: bool) -> torch.Tensor:
        if self.relative_position_k is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        # Relative positions (Shaw et al.): logits += q . r_k(j - i); output += sum_j p_ij r_v(j - i).
        n, m = q.shape[2], k.shape[2]
        sim = torch.einsum("bhid,bhjd->bhij", q, k) * self.scale
        sim = sim + torch.einsum("bhid,ijd->bhij", q, self.relative_position_k(n, m, circular)) * self.scale
        if mask is not None:
            sim = sim.masked_fill(~mask, -torch.finfo(sim.dtype).max)
        attn = sim.softmax(dim=-1)
        out = torch.einsum("bhij,bhjd->bhid", attn, v)
        return out + torch.einsum("bhij,ijd->bhid", attn, self.relative_position_v(n, m, circular))


class GEGLUFeedForward(nn.Module):
    """x -> Linear(x).chunk(2) = (value, gate) -> value * GELU(gate) -> Linear (inner = mult * dim)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner_dim = dim * mult
        self.proj_in = nn.Linear(dim, inner_dim * 2)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(inner_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.dropout(value * F.gelu(gate)))


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, then cross-attention (or a second self-attention), then GEGLU MLP."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None, dropout: float = 0.0,
                 image_cross_attention: bool = False, image_scale: float = 1.0, image_scale_learnable: bool = False,
                 text_context_len: int = 77, relative_position: bool = False, temporal_length: int | None = None,
                 gradient_checkpointing: bool = False):
        super().__init__()
        position = {"relative_position": relative_position, "temporal_length": temporal_length}
        self.attn1 = Attention(dim, None, heads, dim_head, dropout, **position)
        self.attn2 = Attention(dim, context_dim, heads, dim_head, dropout, image_cross_attention=image_cross_attention,
                               image_scale=image_scale, image_scale_learnable=image_scale_learnable,
                               text_context_len=text_context_len, **position)
        self.ff = GEGLUFeedForward(dim, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                controls: UNetControls = AS_TRAINED) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():  # also frozen blocks in eval mode
            return checkpoint(self._forward, x, context, mask, controls, use_reentrant=False)
        return self._forward(x, context, mask, controls)

    def _forward(self, x: torch.Tensor, context: torch.Tensor | None, mask: torch.Tensor | None,
                 controls: UNetControls) -> torch.Tensor:
        x = self.attn1(self.norm1(x), mask=mask, controls=controls) + x  # (B, N, dim)
        x = self.attn2(self.norm2(x), context=context, mask=mask, controls=controls) + x  # (B, N, dim)
        return self.ff(self.norm3(x)) + x  # (B, N, dim)


class SpatialTransformer(nn.Module):
    """Transformer over the pixels of each frame, with (dual) cross-attention to the context tokens."""

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int, depth: int = 1,
                 dropout: float = 0.0, use_linear: bool = True, norm_groups: int = 32,
                 image_cross_attention: bool = False, image_scale: float = 1.0, image_scale_learnable: bool = False,
                 text_context_len: int = 77, gradient_checkpointing: bool = False):
        super().__init__()
        inner_dim = heads * dim_head
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner_dim) if use_linear else nn.Conv2d(channels, inner_dim, 1)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner_dim, heads, dim_head, context_dim, dropout, image_cross_attention, image_scale,
                             image_scale_learnable, text_context_len, gradient_checkpointing=gradient_checkpointing)
            for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner_dim, channels) if use_linear else nn.Conv2d(inner_dim, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor, controls: UNetControls = AS_TRAINED) -> torch.Tensor:
        """x: (b*t, c, h, w); context: (b*t, n_ctx, context_dim)."""
        bt, c, h, w = x.shape
        residual = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)  # (bt, inner, h, w)
        x = x.flatten(2).transpose(1, 2)  # (bt, h*w, inner or c)
        if self.use_linear:
            x = self.proj_in(x)  # (bt, h*w, inner)
        for block in self.transformer_blocks:
            x = block(x, context=context, controls=controls)  # (bt, h*w, inner)
        if self.use_linear:
            x = self.proj_out(x)  # (bt, h*w, c)
        x = x.transpose(1, 2).reshape(bt, -1, h, w)  # (bt, c or inner, h, w)
        if not self.use_linear:
            x = self.proj_out(x)  # (bt, c, h, w)
        return x + residual


class TemporalTransformer(nn.Module):
    """Self-attention over the frames at every pixel (two self-attentions + MLP per block).

    ``causal``: frame i attends only to frames <= i. ``relative_position``: learned relative-distance terms.
    """

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int = 1, dropout: float = 0.0,
                 use_linear: bool = True, norm_groups: int = 32, causal: bool = False,
                 relative_position: bool = False, temporal_length: int | None = None,
                 gradient_checkpointing: bool = False):
        super().__init__()
        inner_dim = heads * dim_head
        self.use_linear = use_linear
        self.causal = causal
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner_dim) if use_linear else nn.Conv1d(channels, inner_dim, 1)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner_dim, heads, dim_head, None, dropout, relative_position=relative_position,
                             temporal_length=temporal_length, gradient_checkpointing=gradient_checkpointing)
            for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner_dim, channels) if use_linear else nn.Conv1d(inner_dim, channels, 1)

    def forward(self, x: torch.Tensor, controls: UNetControls = AS_TRAINED) -> torch.Tensor:
        """x: (b, c, t, h, w) -> same shape."""
        b, c, t, h, w = x.shape
        residual = x
        x = self.norm(x)
        x = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, c, t)  # (b*h*w, c, t)
        if not self.use_linear:
            x = self.proj_in(x)  # (bhw, inner, t)
        x = x.transpose(1, 2)  # (bhw, t, c or inner)
        if self.use_linear:
            x = self.proj_in(x)  # (bhw, t, inner)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril() if self.causal else None
        for block in self.transformer_blocks:
            x = block(x, mask=mask, controls=controls)  # (bhw, t, inner)
        if self.use_linear:
            x = self.proj_out(x)  # (bhw, t, c)
        x = x.transpose(1, 2)  # (bhw, c or inner, t)
        if not self.use_linear:
            x = self.proj_out(x)  # (bhw, c, t)
        x = x.reshape(b, h, w, c, t).permute(0, 3, 4, 1, 2)  # (b, c, t, h, w)
        return x + residual
