"""Explicit maps between the released checkpoint's tensor names and this project's module names.

Each component has an ordered list of :class:`Rename` rules written as templates with ``{name}`` placeholders
(a placeholder matches one dotted segment; ``{name:map}`` applies a named index map, e.g. an offset). Applying the
rules in order maps an official name to ours; applying them in reverse order, with the templates swapped, maps back.
Rules marked ``legacy`` are accepted when reading but never written (old spellings).

Value transforms that go with a rename (a 1x1 convolution stored where we use a linear layer, a fused attention
input projection that we hold as three matrices) are declared next to the rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

IndexMap = tuple[Callable[[int], int], Callable[[int], int]]  # (official -> ours, ours -> official)

_PLACEHOLDER = re.compile(r"\{(\w+)(?::(\w+))?\}")


def _compile(template: str) -> re.Pattern[str]:
    """Template -> regex; a leading ``^`` anchors the template at the start of the name."""
    anchored = template.startswith("^")
    template = template.lstrip("^")
    out, pos, seen = ["^" if anchored else ""], 0, set()
    for m in _PLACEHOLDER.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        name = m.group(1)
        out.append(f"(?P={name})" if name in seen else f"(?P<{name}>[^.]+)")
        seen.add(name)
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


@dataclass(frozen=True)
class Rename:
    official: str
    ours: str
    legacy: bool = False  # read-only alternative spelling

    def apply(self, name: str, to_ours: bool, maps: dict[str, IndexMap]) -> str:
        src, dst = (self.official, self.ours) if to_ours else (self.ours, self.official)
        src_maps = {m.group(1): m.group(2) for m in _PLACEHOLDER.finditer(src)}

        def substitute(match: re.Match[str]) -> str:
            values = match.groupdict()

            def fill(m: re.Match[str]) -> str:
                value, map_name = values[m.group(1)], m.group(2) or src_maps.get(m.group(1))
                if map_name:
                    fwd, inv = maps[map_name]
                    value = str((fwd if to_ours else inv)(int(value)))
                return value

            return _PLACEHOLDER.sub(fill, dst.lstrip("^"))

        return _compile(src).sub(substitute, name)


@dataclass
class KeyMap:
    """Rules for one component; names are relative to the component (prefixes are handled by the caller)."""

    rules: list[Rename]
    maps: dict[str, IndexMap] = field(default_factory=dict)
    # our-name regex -> (to_ours, to_official) value transforms
    transforms: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = (
        field(default_factory=dict))
    # official-name regex -> our names holding equal chunks along dim 0 (fused projections)
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def to_ours(self, name: str) -> str:
        for rule in self.rules:
            name = rule.apply(name, True, self.maps)
        return name

    def to_official(self, name: str) -> str:
        for rule in reversed(self.rules):
            if not rule.legacy:
                name = rule.apply(name, False, self.maps)
        return name

    def convert_to_ours(self, name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        for pattern, targets in self.splits.items():
            m = re.fullmatch(pattern, name)
            if m:
                chunks = tensor.chunk(len(targets), dim=0)
                return [(m.expand(t), c) for t, c in zip(targets, chunks)]
        ours = self.to_ours(name)
        for pattern, (fwd, _) in self.transforms.items():
            if re.fullmatch(pattern, ours):
                tensor = fwd(tensor)
        return [(ours, tensor)]

    def convert_to_official(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        consumed: set[str] = set()
        for pattern, targets in self.splits.items():
            # rebuild fused tensors: find every instance of the first target and concatenate its siblings
            first = re.compile(_split_target_regex(pattern, targets[0]))
            for name in state:
                m = first.fullmatch(name)
                if m:
                    parts = [_fill_split_target(t, m) for t in targets]
                    out[_fill_split_official(pattern, m)] = torch.cat([state[p] for p in parts])
                    consumed.update(parts)
        for name, tensor in state.items():
            if name in consumed:
                continue
            for pattern, (_, inv) in self.transforms.items():
                if re.fullmatch(pattern, name):
                    tensor = inv(tensor)
            out[self.to_official(name)] = tensor
        return out


# Split patterns use regex groups in the official name (e.g. r"transformer\.resblocks\.(\d+)\.attn\.in_proj_weight")
# and "\1"-style references in the targets.


def _split_target_regex(pattern: str, target: str) -> str:
    groups = re.findall(r"\(([^)]*)\)", pattern)
    regex = re.escape(target)
    for i, g in enumerate(groups, start=1):
        regex = regex.replace(re.escape(f"\\{i}"), f"({g})")
    return regex


def _fill_split_target(target: str, match: re.Match[str]) -> str:
    for i, value in enumerate(match.groups(), start=1):
        target = target.replace(f"\\{i}", value)
    return target


def _fill_split_official(pattern: str, match: re.Match[str]) -> str:
    out = pattern
    for value in match.groups():
        out = re.sub(r"\([^)]*\)", value, out, count=1)
    return out.replace("\\.", ".")


def _conv1x1_to_linear(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], t.shape[1]) if t.ndim == 4 else t


def _linear_to_conv1x1(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(*t.shape, 1, 1) if t.ndim == 2 else t


# ----------------------------------------------------------------------------------------------------------------
# U-Net  (official prefix: model.diffusion_model.)
# ----------------------------------------------------------------------------------------------------------------

UNET_KEYMAP = KeyMap(
    rules=[
        Rename("^framestride_embed.", "^fps_embedding.", legacy=True),  # 256 checkpoints saved by older code
        Rename("^time_embed.0.", "^time_embed.linear_1."),
        Rename("^time_embed.2.", "^time_embed.linear_2."),
        Rename("^fps_embedding.0.", "^fs_embed.linear_1."),
        Rename("^fps_embedding.2.", "^fs_embed.linear_2."),
        Rename("^input_blocks.0.0.", "^conv_in."),
        Rename("^input_blocks.{i:shift}.", "^input_blocks.{i}."),
        Rename("^input_blocks.{i}.0.op.", "^input_blocks.{i}.0.conv."),  # Downsample
        Rename("^init_attn.0.", "^init_attn."),
        Rename("^out.0.", "^out_norm."),
        Rename("^out.2.", "^conv_out."),
        # ResBlock
        Rename(".in_layers.0.", ".in_norm."),
        Rename(".in_layers.2.", ".in_conv."),
        Rename(".emb_layers.1.", ".emb_proj."),
        Rename(".out_layers.0.", ".out_norm."),
        Rename(".out_layers.3.", ".out_conv."),
        Rename(".skip_connection.", ".skip."),
        # temporal conv block: convK = (GroupNorm, SiLU, [Dropout,] Conv3d); the first has no dropout, so its conv
        # sits at index 2 (listed after the general rule so that the reverse direction applies it first)
        Rename(".temopral_conv.conv{k:one}.0.", ".temporal_conv.layers.{k}.norm."),
        Rename(".temopral_conv.conv{k:one}.3.", ".temporal_conv.layers.{k}.conv."),
        Rename(".temopral_conv.conv1.2.", ".temporal_conv.layers.0.conv."),
        # transformer blocks
        Rename(".to_out.0.", ".to_out."),
        Rename(".ff.net.0.proj.", ".ff.proj_in."),
        Rename(".ff.net.2.", ".ff.proj_out."),
    ],
    maps={"shift": (lambda i: i - 1, lambda i: i + 1), "one": (lambda k: k - 1, lambda k: k + 1)},
)

# ----------------------------------------------------------------------------------------------------------------
# Query transformer P  (official prefix: image_proj_model.)
# ----------------------------------------------------------------------------------------------------------------

RESAMPLER_KEYMAP = KeyMap(
    rules=[
        Rename("^layers.{i}.0.", "^layers.{i}.attn."),
        Rename(".attn.norm1.", ".attn.norm_image."),
        Rename(".attn.norm2.", ".attn.norm_latents."),
        Rename("^layers.{i}.1.0.", "^layers.{i}.ff.norm."),
        Rename("^layers.{i}.1.1.", "^layers.{i}.ff.fc1."),
        Rename("^layers.{i}.1.3.", "^layers.{i}.ff.fc2."),
    ]
)

# ----------------------------------------------------------------------------------------------------------------
# VAE  (official prefix: first_stage_model.; ours: the names of diffusers' AutoencoderKL (models/autoencoder.py) under
# vae.autoencoder.)
# ----------------------------------------------------------------------------------------------------------------


def vae_keymap(num_levels: int) -> KeyMap:
    """LDM AutoencoderKL names <-> diffusers AutoencoderKL names (decoder levels are stored in reverse order)."""
    reverse = (lambda i: num_levels - 1 - i, lambda i: num_levels - 1 - i)
    return KeyMap(
        rules=[
            Rename("encoder.down.{i}.block.", "encoder.down_blocks.{i}.resnets."),
            Rename("encoder.down.{i}.downsample.", "encoder.down_blocks.{i}.downsamplers.0."),
            Rename("decoder.up.{i:rev}.block.", "decoder.up_blocks.{i}.resnets."),
            Rename("decoder.up.{i:rev}.upsample.", "decoder.up_blocks.{i}.upsamplers.0."),
            Rename("coder.mid.block_1.", "coder.mid_block.resnets.0."),
            Rename("coder.mid.block_2.", "coder.mid_block.resnets.1."),
            Rename("coder.mid.attn_1.norm.", "coder.mid_block.attentions.0.group_norm."),
            Rename("coder.mid.attn_1.q.", "coder.mid_block.attentions.0.to_q."),
            Rename("coder.mid.attn_1.k.", "coder.mid_block.attentions.0.to_k."),
            Rename("coder.mid.attn_1.v.", "coder.mid_block.attentions.0.to_v."),
            Rename("coder.mid.attn_1.proj_out.", "coder.mid_block.attentions.0.to_out.0."),
            Rename(".nin_shortcut.", ".conv_shortcut."),
            Rename("coder.norm_out.", "coder.conv_norm_out."),
        ],
        maps={"rev": reverse},
        transforms={r".*attentions\.0\.to_(q|k|v|out\.0)\.weight": (_conv1x1_to_linear, _linear_to_conv1x1)},
    )


# ----------------------------------------------------------------------------------------------------------------
# OpenCLIP towers  (official prefixes: cond_stage_model.model. (text), embedder.model.visual. (image);
# ours: transformers' CLIPTextTransformer / CLIPVisionTransformer)
# ----------------------------------------------------------------------------------------------------------------

_CLIP_BLOCK = [
    Rename("transformer.resblocks.{i}.ln_1.", "encoder.layers.{i}.layer_norm1."),
    Rename("transformer.resblocks.{i}.ln_2.", "encoder.layers.{i}.layer_norm2."),
    Rename("transformer.resblocks.{i}.attn.out_proj.", "encoder.layers.{i}.self_attn.out_proj."),
    Rename("transformer.resblocks.{i}.mlp.c_fc.", "encoder.layers.{i}.mlp.fc1."),
    Rename("transformer.resblocks.{i}.mlp.c_proj.", "encoder.layers.{i}.mlp.fc2."),
]
_CLIP_SPLITS = {
    r"transformer\.resblocks\.(\d+)\.attn\.in_proj_weight": (
        "encoder.layers.\\1.self_attn.q_proj.weight", "encoder.layers.\\1.self_attn.k_proj.weight",
        "encoder.layers.\\1.self_attn.v_proj.weight"),
    r"transformer\.resblocks\.(\d+)\.attn\.in_proj_bias": (
        "encoder.layers.\\1.self_attn.q_proj.bias", "encoder.layers.\\1.self_attn.k_proj.bias",
        "encoder.layers.\\1.self_attn.v_proj.bias"),
}


CLIP_TEXT_KEYMAP = KeyMap(
    rules=[
        Rename("^token_embedding.weight", "^embeddings.token_embedding.weight"),
        Rename("^positional_embedding", "^embeddings.position_embedding.weight"),
        *_CLIP_BLOCK,
        Rename("^ln_final.", "^final_layer_norm."),
    ],
    splits=_CLIP_SPLITS,
)

CLIP_VISION_KEYMAP = KeyMap(
    rules=[
        Rename("^class_embedding", "^embeddings.class_embedding"),
        Rename("^positional_embedding", "^embeddings.position_embedding.weight"),
        Rename("^conv1.weight", "^embeddings.patch_embedding.weight"),
        Rename("^ln_pre.", "^pre_layrnorm."),
        *_CLIP_BLOCK,
        Rename("^ln_post.", "^post_layernorm."),
    ],
    splits=_CLIP_SPLITS,
)
