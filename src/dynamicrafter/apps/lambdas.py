"""Lambda and the motion controls: the valid ranges of the knobs that set how much a model moves, and the learned
per-layer lambda of a checkpoint (paper Fig. 2), printed and plotted.

Lambda: every dual cross-attention layer computes ``text_attention + lambda * image_attention`` with
``lambda = s * (tanh(alpha) + 1)`` for the 256 model (``alpha`` learned per layer) and ``lambda = s`` otherwise
(see :mod:`dynamicrafter.models.controls` for the run-time factor s).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from dynamicrafter.config import PRESETS, ModelConfig
from dynamicrafter.errors import UserError
from dynamicrafter.models.controls import LAMBDA_RANGE, LAYER_GROUPS, layer_group

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
        out.append(LayerLambda(name, layer_group(name), alpha, value))
    return CheckpointLambdas(config, bool(alphas), scale, out)


def _network_order(name: str) -> tuple[int, int, str]:
    parts = name.split(".")
    return list(LAYER_GROUPS).index(layer_group(name)), int(parts[1]) if parts[1].isdigit() else 0, name


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


__all__ = ["CheckpointLambdas", "LayerLambda", "MotionControls", "format_lambdas", "motion_controls", "plot_lambdas",
           "read_checkpoint_lambdas"]

