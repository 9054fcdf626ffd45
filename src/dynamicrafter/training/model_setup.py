"""The model side of training: parameter groups, what each stage trains, and the two pieces of network surgery
between stages.

Parameter groups (by name, over the whole :class:`DynamiCrafter`):

* ``P``: the query transformer (``image_proj.*``);
* ``temporal``: every U-Net parameter inside a temporal layer (``*.temporal_conv.*``, the TemporalTransformer
  modules, ``init_attn``);
* ``spatial``: every other U-Net parameter (ResBlocks, spatial transformers, embeddings, ``conv_in`` / ``conv_out``),
  including the image cross-attention projections ``*.attn2.to_k_ip``, ``*.attn2.to_v_ip``, ``*.attn2.alpha``
  (the ``image_attention`` subset);
* ``other``: the frozen VAE and CLIP towers.

Surgery (paper Sec. 3.2: VDG enters in stage iii, the base text-to-video model has no image cross-attention):

* :func:`expand_conv_in` widens ``conv_in`` from 4 to 8 input channels; the new weights (for the VDG latents) are
  zero, so the expanded network computes exactly the function of the 4-channel one when training stage iii starts.
* :func:`add_image_cross_attention` adds the image branch (``to_k_ip``, ``to_v_ip``, ``alpha``) to a text-only model
  (the T2V base): ``to_k_ip`` / ``to_v_ip`` start as copies of the text ``to_k`` / ``to_v`` (IP-Adapter's
  initialization), ``alpha`` at 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

import torch
from torch import nn

from dynamicrafter.checkpoint import build_empty, load_component, materialize_buffers
from dynamicrafter.config import ModelConfig
from dynamicrafter.errors import ConfigError
from dynamicrafter.model import DynamiCrafter
from dynamicrafter.models.attention import TemporalTransformer
from dynamicrafter.models.unet import TemporalConvBlock
from dynamicrafter.pretrained import load_model_or_folder

GROUPS = ("P", "spatial", "temporal", "other")
IMAGE_ATTENTION_PATTERN = re.compile(r"\.attn2\.(to_k_ip\.weight|to_v_ip\.weight|alpha)$")


def temporal_parameter_names(model: DynamiCrafter) -> set[str]:
    """Full names (``unet.…``) of the parameters inside temporal layers."""
    names: set[str] = set()
    for module_name, module in model.unet.named_modules():
        if isinstance(module, (TemporalConvBlock, TemporalTransformer)):
            names.update(f"unet.{module_name}.{p}" for p, _ in module.named_parameters())
    return names


def is_image_attention(name: str) -> bool:
    return name.startswith("unet.") and IMAGE_ATTENTION_PATTERN.search(name) is not None


def parameter_groups(model: DynamiCrafter) -> dict[str, str]:
    """Every parameter name -> its group (``P``, ``spatial``, ``temporal``, ``other``)."""
    temporal = temporal_parameter_names(model)
    groups = {}
    for name, _ in model.named_parameters():  # LoRA factors count in the group of the layer they adapt
        if name.startswith("image_proj."):
            groups[name] = "P"
        elif name in temporal:
            groups[name] = "temporal"
        elif name.startswith("unet."):
            groups[name] = "spatial"
        else:
            groups[name] = "other"
    return groups


def trainable_names(model: DynamiCrafter, trainable: Iterable[str]) -> set[str]:
    """Names of the parameters a stage trains; ``trainable`` holds groups of training.config.TRAINABLE_GROUPS."""
    trainable = set(trainable)
    groups = parameter_groups(model)
    names = set()
    for name, group in groups.items():
        if (("image_proj" in trainable and group == "P") or ("spatial" in trainable and group == "spatial")
                or ("temporal" in trainable and group == "temporal")
                or ("image_attention" in trainable and is_image_attention(name))):
            names.add(name)
    return names


def apply_trainable(model: DynamiCrafter, trainable: Iterable[str]) -> set[str]:
    """Set ``requires_grad`` per parameter for a stage and return the trainable names (error if there are none)."""
    names = trainable_names(model, trainable)
    if not names:
        raise ConfigError(f"this model has no parameters in the trainable groups {sorted(trainable)} (a model without "
                          f"image cross-attention cannot train it: start from a model that has it)")
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
    return names


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """Outermost modules whose parameters are all frozen (they are kept in eval mode during training)."""
    out: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            out.append(module)
            return
        for child in module.children():
            visit(child)

    visit(model)
    return out


def parameter_table(model: DynamiCrafter) -> str:
    """Per group: total and trainable parameter counts (printed before every run)."""
    groups = parameter_groups(model)
    total = dict.fromkeys(GROUPS, 0)
    train = dict.fromkeys(GROUPS, 0)
    ip_total = ip_train = lora_total = lora_train = 0
    for name, p in model.named_parameters():
        g = groups[name]
        total[g] += p.numel()
        train[g] += p.numel() if p.requires_grad else 0
        if is_image_attention(name):
            ip_total += p.numel()
            ip_train += p.numel() if p.requires_grad else 0
        if ".lora_A." in name or ".lora_B." in name:
            lora_total += p.numel()
            lora_train += p.numel() if p.requires_grad else 0
    lines = [f"{'group':<34}{'parameters':>16}{'trainable':>16}"]
    for g, label in (("P", "P (query transformer)"), ("spatial", "spatial (U-Net)"),
                     ("temporal", "temporal (U-Net)"), ("other", "other (VAE, CLIP text + image)")):
        lines.append(f"{label:<34}{total[g]:>16,}{train[g]:>16,}")
        if g == "spatial":
            lines.append(f"{'  of which image cross-attention':<34}{ip_total:>16,}{ip_train:>16,}")
    if lora_total:
        lines.append(f"{'LoRA adapters (in the rows above)':<34}{lora_total:>16,}{lora_train:>16,}")
    lines.append(f"{'total':<34}{sum(total.values()):>16,}{sum(train.values()):>16,}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Surgery
# ----------------------------------------------------------------------------------------------------------------


def _rebuild(model: DynamiCrafter, config: ModelConfig, state: dict[str, torch.Tensor]) -> DynamiCrafter:
    """A new model of ``config`` holding ``state`` (built on the meta device: no second random initialization)."""
    new = build_empty(config)
    new.load_state_dict(state, strict=True, assign=True)
    materialize_buffers(new)
    return new.to(model.device).train(model.training)


def expand_conv_in(model: DynamiCrafter, in_channels: int = 8) -> DynamiCrafter:
    """Widen the U-Net input from 4 (noisy latents) to ``in_channels`` (+ VDG latents), new weights zero.

    ``conv_in(cat[z_t, vdg]) = W_z * z_t + W_vdg * vdg + b`` with ``W_vdg = 0`` equals the 4-channel network's
    ``W_z * z_t + b``: stage iii starts from the stage-ii function exactly and learns to use the VDG input.
    """
    old = model.config.unet.in_channels
    if old == in_channels:
        return model
    if old > in_channels:
        raise ConfigError(f"cannot shrink the U-Net input from {old} to {in_channels} channels")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    weight = state["unet.conv_in.weight"]  # (mc, old, 3, 3)
    extra = weight.new_zeros(weight.shape[0], in_channels - old, *weight.shape[2:])
    state["unet.conv_in.weight"] = torch.cat([weight, extra], dim=1)  # (mc, in_channels, 3, 3)
    config = replace(model.config, unet=replace(model.config.unet, in_channels=in_channels))
    return _rebuild(model, config, state)


def add_image_cross_attention(model: DynamiCrafter) -> DynamiCrafter:
    """Give a text-only U-Net (``image_cross_attention=False``) the image branch of the dual cross-attention."""
    unet = model.config.unet
    if unet.image_cross_attention:
        return model
    config = replace(model.config, unet=replace(unet, image_cross_attention=True,
                                                image_tokens_per_frame=model.config.resampler.num_queries))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    probe = build_empty(config)
    for name, p in probe.named_parameters():
        if name in state:
            continue
        if name.endswith("attn2.to_k_ip.weight"):
            state[name] = state[name.replace("to_k_ip", "to_k")].clone()
        elif name.endswith("attn2.to_v_ip.weight"):
            state[name] = state[name.replace("to_v_ip", "to_v")].clone()
        elif name.endswith("attn2.alpha"):
            state[name] = torch.zeros(p.shape, dtype=p.dtype, device=model.device)
        else:
            raise ConfigError(f"cannot add image cross-attention: unexpected new parameter '{name}'")
    return _rebuild(model, config, state)


def set_gradient_checkpointing(model: DynamiCrafter, enabled: bool) -> DynamiCrafter:
    """Switch activation checkpointing of the U-Net blocks (ResBlocks, transformer blocks) on or off."""
    for module in model.unet.modules():
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = enabled
    unet = replace(model.config.unet, gradient_checkpointing=enabled)
    model.config = replace(model.config, unet=unet)
    model.unet.config = unet
    return model


def build_model(config: ModelConfig | None, init: str | None = None, *, text_encoder: str | None = None,
                image_encoder: str | None = None, seed: int = 0) -> DynamiCrafter:
    """The starting model: ``init`` loaded strictly (released or own checkpoint), or freshly initialized.

    With ``init``, ``config`` None takes the configuration stored in the file (the project's own checkpoints) or
    detected from its tensors (released files). A fresh model gets the networks' own initialization (zeros on
    residual outputs, as released), seeded; its VAE and CLIP towers are then random too (tests and smoke runs): pass
    ``text_encoder`` / ``image_encoder`` files, or an ``init`` checkpoint, for real training.
    """
    if init is not None:
        model = load_model_or_folder(init, config, text_encoder_path=text_encoder, image_encoder_path=image_encoder)
        return model.train()
    if config is None:
        raise ConfigError("no model: give --config (a preset, a released YAML, test_size) or --init CHECKPOINT")
    torch.manual_seed(seed)
    model = DynamiCrafter(config)
    for name, path in (("text_encoder", text_encoder), ("image_encoder", image_encoder)):
        if path is not None:
            load_component(model, name, path)
    return model.train()
