"""The controls of the two conditioning streams: lambda (image cross-attention weight), motion amount, and the
learned per-layer lambda of a checkpoint (paper Fig. 2).

Lambda: every dual cross-attention layer computes ``text_attention + lambda * image_attention`` with
``lambda = s * (tanh(alpha) + 1)`` for the 256 model (``alpha`` learned per layer) and ``lambda = s`` otherwise.
The run-time factor ``s`` (``image_attention_scale``) is 1 as trained; it can be set globally or per layer group
("input", "middle", "output") or per layer name. ``s = 0`` switches the context stream off.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dynamicrafter.config import PRESETS, ModelConfig
from dynamicrafter.errors import UserError

LAYER_GROUPS = ("input", "middle", "output")
SCALE_EXAMPLE = "0.5, or input=0.5,middle=1.0,output=1.0 (groups or layer names)"
LAMBDA_RANGE = (0.0, 1.0)  # recommended run-time factor s: 1 = as trained, 0 = context stream off

ImageAttentionScale = float | dict[str, float]


def parse_image_attention_scale(value: str | float | Mapping[str, float], what: str = "image attention scale"
                                ) -> ImageAttentionScale:
    """``"0.5"`` -> 0.5; ``"input=0.5,middle=1,output=1"`` (or a mapping) -> {"input": 0.5, ...}.

    Keys are the groups "input" / "middle" / "output" or layer names such as
    ``input_blocks.0.1.transformer_blocks.0.attn2`` (checked against the model when it runs). Values must be >= 0.
    ``what`` names the option or field in error messages.
    """
    if isinstance(value, bool):
        raise UserError(f"{what}: expected a number or NAME=NUMBER pairs, got {value!r} ({SCALE_EXAMPLE})")
    if isinstance(value, (int, float)):
        return _check_scale_value(float(value), what)
    if isinstance(value, Mapping):
        pairs = [(str(k), v) for k, v in value.items()]
    else:
        text = str(value).strip()
        if "=" not in text:
            return _check_scale_value(_to_float(text, what), what)
        pairs = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, number = part.partition("=")
            if not sep or not name.strip():
                raise UserError(f"{what}: {part!r} is not NAME=NUMBER ({SCALE_EXAMPLE})")
            pairs.append((name.strip(), number))
    if not pairs:
        raise UserError(f"{what}: no values given ({SCALE_EXAMPLE})")
    out: dict[str, float] = {}
    for name, number in pairs:
        if name not in LAYER_GROUPS and not name.endswith(".attn2"):
            raise UserError(f"{what}: unknown layer group {name!r}: use {', '.join(LAYER_GROUPS)} or a layer name "
                            f"ending in '.attn2' (list them with 'dynamicrafter lambda CHECKPOINT')")
        if isinstance(number, bool):
            raise UserError(f"{what}: {name} must be a number, got {number!r}")
        out[name] = _check_scale_value(_to_float(number, f"{what} {name}") if isinstance(number, str)
                                       else float(number), f"{what} {name}")
    return out


def _to_float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a number ({SCALE_EXAMPLE})") from None


def _check_scale_value(value: float, what: str) -> float:
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


# ----------------------------------------------------------------------------------------------------------------
# Motion amount
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MotionControls:
    """The knobs that set how much a model moves, with their valid ranges.

    ``frame_stride``: the fs condition, a frame stride (256 model: larger = more motion) or frames per second
    (512 / 1024 / interpolation: smaller = more motion). ``image_attention_scale``: the factor s on lambda
    (smaller = a weaker context stream, less adherence to the image; 0 = context stream off). How lambda changes the
    amount of motion depends on the model: measure it with :func:`dynamicrafter.apps.checks.lambda_sweep`.
    """

    model: str
    frame_stride_meaning: str  # "frame stride" or "fps"
    frame_stride_range: tuple[int, int]
    frame_stride_default: int
    frame_stride_more_motion: str  # "larger" or "smaller"
    image_attention_scale_range: tuple[float, float]
    image_attention_scale_default: float
    learned_lambda: bool

    def describe(self) -> str:
        lo, hi = self.frame_stride_range
        s_lo, s_hi = self.image_attention_scale_range
        return (f"model {self.model}: --frame-stride is the {self.frame_stride_meaning}, {lo}-{hi} (default "
                f"{self.frame_stride_default}; {self.frame_stride_more_motion} = more motion); "
                f"--image-attention-scale {s_lo:g}-{s_hi:g} (default {self.image_attention_scale_default:g}; "
                f"smaller = a weaker context stream, less adherence to the image)")


def motion_controls(model: str | ModelConfig) -> MotionControls:
    """Valid ranges of the motion controls for a preset name or config (see the README's motion table)."""
    if isinstance(model, str):
        if model not in PRESETS:
            raise UserError(f"unknown model '{model}': use one of {sorted(PRESETS)} or pass a ModelConfig")
        model = PRESETS[model]
    d = model.defaults
    fps = model.fs_condition_type == "fps"
    return MotionControls(
        model=model.name,
        frame_stride_meaning="fps" if fps else "frame stride",
        frame_stride_range=tuple(d.frame_stride_range),  # type: ignore[arg-type]
        frame_stride_default=d.frame_stride,
        frame_stride_more_motion="smaller" if fps else "larger",
        image_attention_scale_range=LAMBDA_RANGE,
        image_attention_scale_default=model.unet.image_cross_attention_scale,
        learned_lambda=model.unet.image_cross_attention_scale_learnable,
    )


# ----------------------------------------------------------------------------------------------------------------
# Learned lambda of a checkpoint (paper Fig. 2, left)
# ----------------------------------------------------------------------------------------------------------------

OFFICIAL_UNET_PREFIX = "model.diffusion_model."
OUR_UNET_PREFIX = "unet."
GROUP_COLOURS = {"input": (31, 119, 180), "middle": (255, 127, 14), "output": (44, 160, 44)}


@dataclass(frozen=True)
class LayerLambda:
    name: str  # our layer name (as accepted by image_attention_scale), e.g. input_blocks.0.1.transformer_blocks.0.attn2
    group: str  # input / middle / output
    alpha: float | None  # the learned gate, None for models without one
    value: float  # lambda = scale * (tanh(alpha) + 1), or the fixed scale


@dataclass(frozen=True)
class CheckpointLambdas:
    config: ModelConfig  # the checkpoint's configuration (stored in the file, or the detected preset)
    learned: bool
    scale: float  # the fixed factor s of the config
    layers: list[LayerLambda]

    @property
    def model(self) -> str:
        return self.config.name


def read_checkpoint_lambdas(path: str | os.PathLike, config: ModelConfig | None = None) -> CheckpointLambdas:
    """The lambda of every dual cross-attention layer, reading only the ``attn2`` tensors' names and the
    ``attn2.alpha`` values (no model is built; ``.ckpt`` files are memory-mapped, ``.safetensors`` read lazily)."""
    from dynamicrafter.checkpoint import config_from_metadata, detect_preset, read_state_dict
    from dynamicrafter.keymap import UNET_KEYMAP

    sd = read_state_dict(path)
    if config is None:
        config = config_from_metadata(sd)
    if config is None:
        detected = detect_preset(sd, path)
        if detected is None:
            raise UserError(f"'{path}' is not a DynamiCrafter checkpoint (no {OFFICIAL_UNET_PREFIX}* tensors)")
        config = PRESETS[detected]
    scale = config.unet.image_cross_attention_scale
    alphas: dict[str, float] = {}
    layers: set[str] = set()
    for key in sd.keys():
        if key.startswith(OFFICIAL_UNET_PREFIX):
            name = UNET_KEYMAP.to_ours(key[len(OFFICIAL_UNET_PREFIX) :])
        elif key.startswith(OUR_UNET_PREFIX):
            name = key[len(OUR_UNET_PREFIX) :]
        else:
            continue
        if name.endswith("attn2.alpha"):
            alphas[name.removesuffix(".alpha")] = float(sd[key].float())
        elif name.endswith("attn2.to_k_ip.weight"):
            layers.add(name.removesuffix(".to_k_ip.weight"))
    layers |= set(alphas)
    if not layers:
        raise UserError(f"'{path}' has no dual cross-attention layers (attn2.to_k_ip.*): not a DynamiCrafter U-Net")
    out = []
    for name in sorted(layers, key=_network_order):
        alpha = alphas.get(name)
        value = scale * (math.tanh(alpha) + 1.0) if alpha is not None else scale
        out.append(LayerLambda(name, _group(name), alpha, value))
    return CheckpointLambdas(config, bool(alphas), scale, out)


def _group(name: str) -> str:
    return {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}[name.split(".")[0]]


def _network_order(name: str) -> tuple[int, int, str]:
    parts = name.split(".")
    return LAYER_GROUPS.index(_group(name)), int(parts[1]) if parts[1].isdigit() else 0, name


def format_lambdas(lambdas: CheckpointLambdas) -> str:
    """A table of the per-layer lambda (what ``dynamicrafter lambda`` prints)."""
    lines = []
    if lambdas.learned:
        lines.append(f"model {lambdas.model}: learned lambda = {lambdas.scale:g} * (tanh(alpha) + 1) per layer")
    else:
        lines.append(f"model {lambdas.model}: no learned lambda gate; lambda is the fixed scale {lambdas.scale:g} in "
                     f"all {len(lambdas.layers)} layers")
    width = max(len(layer.name) for layer in lambdas.layers)
    lines.append(f"  {'#':>3}  {'group':6}  {'layer':{width}}  {'alpha':>8}  {'lambda':>7}")
    for i, layer in enumerate(lambdas.layers):
        alpha = f"{layer.alpha:8.4f}" if layer.alpha is not None else f"{'-':>8}"
        lines.append(f"  {i:>3}  {layer.group:6}  {layer.name:{width}}  {alpha}  {layer.value:7.4f}")
    return "\n".join(lines)


def plot_lambdas(lambdas: CheckpointLambdas, path: str | os.PathLike) -> Path:
    """Bar chart of lambda per layer, coloured by input / middle / output block (paper Fig. 2 left); a PNG written
    atomically with PIL."""
    from PIL import Image, ImageDraw, ImageFont

    from dynamicrafter.media import atomic_path

    layers = lambdas.layers
    bar, gap, left, right, top, bottom = 18, 6, 64, 24, 48, 64
    plot_w = len(layers) * (bar + gap) + gap
    width, height = max(left + plot_w + right, 480), 360
    plot_h = height - top - bottom
    y_max = max(2.0 * lambdas.scale if lambdas.learned else 1.25 * lambdas.scale, max(x.value for x in layers) * 1.05,
                1e-6)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()

    def y_of(value: float) -> float:
        return top + plot_h * (1.0 - value / y_max)

    step = _nice_step(y_max)
    for i in range(int(y_max / step) + 1):
        y = y_of(i * step)
        draw.line([(left, y), (left + plot_w, y)], fill=(225, 225, 225))
        draw.text((left - 8, y), f"{i * step:g}", fill="black", font=font, anchor="rm")
    if lambdas.learned:  # lambda at initialization (alpha = 0)
        y = y_of(lambdas.scale)
        for x in range(left, left + plot_w, 8):
            draw.line([(x, y), (min(x + 4, left + plot_w), y)], fill=(120, 120, 120))
    spans: dict[str, list[float]] = {}
    for i, layer in enumerate(layers):
        x0 = left + gap + i * (bar + gap)
        draw.rectangle([x0, y_of(layer.value), x0 + bar, y_of(0.0)], fill=GROUP_COLOURS[layer.group])
        draw.text((x0 + bar / 2, top + plot_h + 4), str(i), fill="black", font=font, anchor="ma")
        spans.setdefault(layer.group, []).append(x0 + bar / 2)
    for group, xs in spans.items():
        draw.text(((xs[0] + xs[-1]) / 2, top + plot_h + 22), group, fill=GROUP_COLOURS[group], font=font, anchor="ma")
    draw.line([(left, top), (left, top + plot_h), (left + plot_w, top + plot_h)], fill="black")
    kind = "learned lambda per layer" if lambdas.learned else "fixed lambda (no learned gate)"
    draw.text((left, 16), f"{kind}, model {lambdas.model}", fill="black", font=font)
    draw.text((left + plot_w / 2, height - 14), "dual cross-attention layer (network order)", fill="black",
              font=font, anchor="mm")
    draw.text((12, top - 18), "lambda", fill="black", font=font)
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def _nice_step(y_max: float) -> float:
    raw = y_max / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


__all__ = ["CheckpointLambdas", "LayerLambda", "MotionControls", "check_scale_layers", "format_lambdas",
           "motion_controls", "parse_image_attention_scale", "plot_lambdas", "read_checkpoint_lambdas"]

