"""Run-time controls of the 3D U-Net, passed to ``UNet3D.forward`` with every call (never stored in the modules).

Lambda (paper Eq. 3): every dual cross-attention layer computes ``text_attention + lambda * image_attention`` with
``lambda = s * (tanh(alpha) + 1)`` for the 256 model (``alpha`` learned per layer) and ``lambda = s`` otherwise. The
run-time factor ``s`` (``image_attention_scale``) is the config's value as trained (1); it can be set for every layer,
per layer group ("input", "middle", "output") or per layer name (``input_blocks.1.1.transformer_blocks.0.attn2``);
``s = 0`` switches the context stream off.

Circular time: the temporal convolutions pad frame 0 with frame ``t - 1`` and frame ``t - 1`` with frame 0, and
relative temporal distances are taken the short way round a circle, so the last frame is the first one's neighbour
(ring loops).

Because the controls travel with the call, two calls with different settings can run on one network at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dynamicrafter.errors import UserError

# layer group -> prefix of the layer names in it
LAYER_GROUPS: Mapping[str, str] = MappingProxyType(
    {"input": "input_blocks.", "middle": "middle_block.", "output": "output_blocks."})
IMAGE_ATTENTION_SUFFIX = ".attn2"  # the dual cross-attention layers' names end so
SCALE_EXAMPLE = "0.5, or input=0.5,middle=1.0,output=1.0 (groups or layer names)"
LAMBDA_RANGE = (0.0, 1.0)  # recommended run-time factor s: 1 = as trained, 0 = context stream off

ImageAttentionScale = float | Mapping[str, float]


def layer_group(name: str) -> str:
    """The group ("input", "middle", "output") of a U-Net layer name."""
    for group, prefix in LAYER_GROUPS.items():
        if name.startswith(prefix):
            return group
    raise ValueError(f"{name!r} is in no layer group ({', '.join(LAYER_GROUPS)})")


def parse_image_attention_scale(value: str | float | Mapping[str, float], what: str = "image attention scale"
                                ) -> ImageAttentionScale:
    """``"0.5"`` or 0.5 -> 0.5; ``"input=0.5,middle=1,output=1"`` (or a mapping) -> {"input": 0.5, ...}.

    Keys are the groups "input" / "middle" / "output" or layer names ending in ``.attn2`` (checked against the model
    by :func:`check_scale_layers`). Values must be finite and >= 0. ``what`` names the option in error messages.
    """
    if isinstance(value, bool):
        raise UserError(f"{what}: expected a number or NAME=NUMBER pairs, got {value!r} ({SCALE_EXAMPLE})")
    if isinstance(value, (int, float)):
        return _checked_scale(float(value), what)
    if isinstance(value, Mapping):
        pairs = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, str):
        text = value.strip()
        if "=" not in text:
            return _checked_scale(_to_float(text, what), what)
        pairs = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, number = part.partition("=")
            if not sep or not name.strip():
                raise UserError(f"{what}: {part!r} is not NAME=NUMBER ({SCALE_EXAMPLE})")
            pairs.append((name.strip(), number))
    else:
        raise UserError(f"{what}: expected a number or NAME=NUMBER pairs, got {type(value).__name__} "
                        f"({SCALE_EXAMPLE})")
    if not pairs:
        raise UserError(f"{what}: no values given ({SCALE_EXAMPLE})")
    out: dict[str, float] = {}
    for name, number in pairs:
        if name not in LAYER_GROUPS and not name.endswith(IMAGE_ATTENTION_SUFFIX):
            raise UserError(f"{what}: unknown layer group {name!r}: use {', '.join(LAYER_GROUPS)} or a layer name "
                            f"ending in '{IMAGE_ATTENTION_SUFFIX}' (list them with 'dynamicrafter lambda CHECKPOINT')")
        if isinstance(number, bool) or not isinstance(number, (str, int, float)):
            raise UserError(f"{what}: {name} must be a number, got {number!r}")
        label = f"{what} {name}"
        out[name] = _checked_scale(_to_float(number, label) if isinstance(number, str) else float(number), label)
    return out


def _to_float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a number ({SCALE_EXAMPLE})") from None


def _checked_scale(value: float, what: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{what} must be a finite number >= 0 (1 = as trained, 0 = no image context), got {value}")
    return value


def check_scale_layers(scale: ImageAttentionScale | None, layer_names: list[str], what: str) -> None:
    """Refuse layer names that the model does not have (before any rendering starts)."""
    if not isinstance(scale, Mapping):
        return
    for name in scale:
        if name not in LAYER_GROUPS and name not in layer_names:
            example = layer_names[0] if layer_names else "-"
            raise UserError(f"{what}: the model has no image cross-attention layer {name!r} (e.g. '{example}'; list "
                            f"them with 'dynamicrafter lambda CHECKPOINT')")


@dataclass(frozen=True)
class UNetControls:
    """The run-time controls of one U-Net call (defaults: the network as trained).

    ``image_attention_scale``: the factor s on lambda, one value or per group / layer name (layers not named keep
    their trained value). ``circular``: the time axis is a circle.
    """

    image_attention_scale: ImageAttentionScale | None = None
    circular: bool = False
    _per_layer: Mapping[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        scale = self.image_attention_scale
        if scale is not None:
            scale = parse_image_attention_scale(scale, "image_attention_scale")
            object.__setattr__(self, "image_attention_scale", scale)
        per_layer: dict[str, float] = {}
        if isinstance(scale, Mapping):
            # groups first, then layer names (a layer name is more specific than its group)
            for key in sorted(scale, key=lambda k: k not in LAYER_GROUPS):
                per_layer[key] = float(scale[key])
        object.__setattr__(self, "_per_layer", MappingProxyType(per_layer))

    def image_scale(self, layer_name: str, trained: float) -> float:
        """The factor s of the layer ``layer_name`` whose trained factor is ``trained``."""
        scale = self.image_attention_scale
        if scale is None:
            return trained
        if not isinstance(scale, Mapping):
            return float(scale)
        value = self._per_layer.get(layer_name)
        if value is not None:
            return value
        for group, prefix in LAYER_GROUPS.items():
            if group in self._per_layer and layer_name.startswith(prefix):
                return self._per_layer[group]
        return trained

    def check_layers(self, layer_names: list[str]) -> None:
        """Refuse layer names in ``image_attention_scale`` that are not among ``layer_names``."""
        check_scale_layers(self.image_attention_scale, layer_names, "image_attention_scale")


AS_TRAINED = UNetControls()

__all__ = ["AS_TRAINED", "IMAGE_ATTENTION_SUFFIX", "ImageAttentionScale", "LAMBDA_RANGE", "LAYER_GROUPS",
           "SCALE_EXAMPLE", "UNetControls", "check_scale_layers", "layer_group", "parse_image_attention_scale"]
