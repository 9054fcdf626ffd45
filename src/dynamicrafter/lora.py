"""LoRA adapters for the U-Net and P, built on peft (no low-rank layer is written here).

A LoRA adapter adds ``W x + (alpha / r) * s * B A x`` to a frozen layer ``W`` (A: r x in, B: out x r, B = 0 at the
start, so training starts from the base model's function); ``s`` is the scale chosen when using the adapter.

Targets (:class:`LoraSpec`):

* ``spatial``: the attention projections ``to_q``, ``to_k``, ``to_v``, ``to_out`` (and the image branch ``to_k_ip``,
  ``to_v_ip``) of the spatial transformers (self- and dual cross-attention);
* ``temporal``: the same projections of the temporal transformers (and ``init_attn``);
* ``all``: both; or a regular expression searched in the full module names (``unet.input_blocks.0.1.…attn2.to_k``,
  ``image_proj.layers.0.attn.to_q``), which may pick any linear layer or 2D convolution of the U-Net and P;
* ``image_proj``: also every linear layer of P; ``convs``: also the 2D convolutions of the chosen part (ResBlocks,
  down / upsampling, ``conv_in`` / ``conv_out``). The temporal convolutions are computed from their weights directly
  (a fast CPU path), so no adapter can wrap them.

The adapter file (``.safetensors``): tensors named as in the released checkpoints (``model.diffusion_model.`` /
``image_proj_model.`` + the released module name + ``.lora_A.weight`` / ``.lora_B.weight``, mapped by
:mod:`dynamicrafter.keymap`), and metadata: ``format`` (``dynamicrafter-lora``), ``base_model`` (the model kind:
a preset name or the config name), ``base_checksum`` (:func:`base_checksum`), ``rank``, ``alpha``, ``targets``,
``image_proj``, ``convs`` and ``training`` (the run's settings, JSON).

Loading checks the file against the model: another base model kind, a tensor for a layer the model does not have,
or a shape that does not fit are refused (one line naming the file and what it was trained for); other base weights
of the same kind (another checksum: e.g. an adapter trained on a released model used on a fine-tune of it) only
warn, because that use is legitimate and often works.

Loading, scaling, fusing and unloading change the model in place (unlike lambda, which travels with each call): two
calls with different adapter scales cannot run on one pipeline at the same time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dynamicrafter import keymap as K
from dynamicrafter.config import PRESETS, ModelConfig
from dynamicrafter.errors import ConfigError, UserError
from dynamicrafter.model import DynamiCrafter
from dynamicrafter.models.attention import Attention, SpatialTransformer, TemporalTransformer
from dynamicrafter.models.unet import TemporalConvBlock

FORMAT = "dynamicrafter-lora"
FORMAT_VERSION = "1"
TARGET_PRESETS = ("spatial", "temporal", "all")
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out", "to_k_ip", "to_v_ip")
WRAPPABLE = (nn.Linear, nn.Conv2d)  # layer types peft wraps whose forward the networks call
# our component -> (released prefix, key map) of the adapter file's tensor names
COMPONENTS: dict[str, tuple[str, K.KeyMap]] = {"unet": ("model.diffusion_model.", K.UNET_KEYMAP),
                                               "image_proj": ("image_proj_model.", K.RESAMPLER_KEYMAP)}
LORA_FACTORS = ("lora_A", "lora_B")


@dataclass(frozen=True)
class LoraSpec:
    """What a LoRA adapter wraps and its size: ``rank`` r, ``alpha`` (None: = r, i.e. a factor alpha / r of 1),
    ``targets`` (spatial | temporal | all | a regular expression), ``image_proj`` (P's linear layers too) and
    ``convs`` (the 2D convolutions of the chosen part too)."""

    rank: int
    alpha: float | None = None
    targets: str = "spatial"
    image_proj: bool = False
    convs: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"--lora RANK must be a positive integer, got {self.rank!r}")
        if self.alpha is not None and not self.alpha > 0:
            raise ConfigError(f"--lora-alpha must be > 0, got {self.alpha!r}")
        if self.targets not in TARGET_PRESETS:
            try:
                re.compile(self.targets)
            except re.error as e:
                raise ConfigError(f"--lora-targets {self.targets!r} is neither {', '.join(TARGET_PRESETS)} nor a "
                                  f"regular expression ({e})") from None

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)

    def to_metadata(self) -> dict[str, str]:
        return {"rank": str(self.rank), "alpha": repr(self.lora_alpha), "targets": self.targets,
                "image_proj": str(self.image_proj).lower(), "convs": str(self.convs).lower()}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> LoraSpec:
        return cls(int(meta["rank"]), float(meta["alpha"]), meta.get("targets", "spatial"),
                   meta.get("image_proj") == "true", meta.get("convs") == "true")


# ----------------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------------


def _part_of(unet: nn.Module) -> dict[str, str]:
    """U-Net module name -> "temporal" (inside a temporal transformer or temporal conv block) or "spatial"."""
    temporal_roots = [name for name, m in unet.named_modules() if isinstance(m, (TemporalTransformer,
                                                                                 TemporalConvBlock))]
    out = {}
    for name, _ in unet.named_modules():
        inside = any(name == root or name.startswith(root + ".") for root in temporal_roots)
        out[name] = "temporal" if inside else "spatial"
    return out


def wrappable_modules(model: DynamiCrafter) -> dict[str, nn.Module]:
    """Every layer an adapter can wrap: the linear layers and 2D convolutions of the U-Net and P (full names)."""
    out = {}
    for component in COMPONENTS:
        for name, module in model.component(component).named_modules():
            if isinstance(module, WRAPPABLE) and not any(f in name.split(".") for f in LORA_FACTORS):
                out[f"{component}.{name.removesuffix('.base_layer')}"] = module  # a wrapped layer: by its own name
    return out


def target_modules(model: DynamiCrafter, spec: LoraSpec) -> list[str]:
    """Full names (``unet.…``, ``image_proj.…``) of the layers ``spec`` wraps; an error when there are none."""
    candidates = wrappable_modules(model)
    if spec.targets not in TARGET_PRESETS:
        pattern = re.compile(spec.targets)
        names = [n for n in candidates if pattern.search(n)]
        if not names:
            raise ConfigError(f"--lora-targets {spec.targets!r} matches no linear layer or 2D convolution of the "
                              f"U-Net or P (names look like 'unet.input_blocks.0.1.transformer_blocks.0.attn2.to_k')")
        return names
    parts = {"spatial", "temporal"} if spec.targets == "all" else {spec.targets}
    unet = model.unet
    part = _part_of(unet)
    attention = {name for name, m in unet.named_modules() if isinstance(m, Attention)}
    names = []
    for full in candidates:
        component, _, name = full.partition(".")
        if component == "image_proj":
            if spec.image_proj:
                names.append(full)
            continue
        parent, _, leaf = name.rpartition(".")
        if part[name] not in parts:
            continue
        if (parent in attention and leaf in ATTENTION_PROJECTIONS) or (
                spec.convs and isinstance(candidates[full], nn.Conv2d) and not _in_spatial_transformer(unet, name)):
            names.append(full)
    if not names:
        raise ConfigError(f"--lora-targets {spec.targets}: this model has no such layers")
    return names


def _in_spatial_transformer(unet: nn.Module, name: str) -> bool:
    """The 1x1 in / out projections of convolutional spatial transformers are not "the convolutions"."""
    parent = name.rpartition(".")[0]
    return isinstance(unet.get_submodule(parent), SpatialTransformer) if parent else False


# ----------------------------------------------------------------------------------------------------------------
# Adding adapters to a model (peft)
# ----------------------------------------------------------------------------------------------------------------


def add_adapter(model: DynamiCrafter, spec: LoraSpec, name: str = "default",
                modules: Iterable[str] | None = None) -> list[str]:
    """Wrap the target layers with a new LoRA adapter ``name`` (peft), in place; returns the wrapped names.

    The new factors start as peft initializes them (A random, B = 0: the function is unchanged). Every other
    parameter keeps its ``requires_grad``; the adapter's factors require gradients.
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = sorted(modules) if modules is not None else target_modules(model, spec)
    frozen = {n: p.requires_grad for n, p in model.named_parameters()}
    config = LoraConfig(r=spec.rank, lora_alpha=spec.lora_alpha, target_modules=targets, lora_dropout=0.0,
                        bias="none")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*already found a `?peft_config`?.*", category=UserWarning)
        inject_adapter_in_model(config, model, adapter_name=name)
    for n, p in model.named_parameters():  # peft freezes everything else: restore the previous flags
        if f".lora_A.{name}." in n or f".lora_B.{name}." in n:
            p.requires_grad_(True)
        else:
            p.requires_grad_(frozen.get(_base_name(n), frozen.get(n, False)))
    return targets


def lora_layers(model: nn.Module) -> dict[str, Any]:
    """Full module name -> peft LoRA layer, for every wrapped layer of ``model``."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def adapter_names(model: nn.Module) -> list[str]:
    names: set[str] = set()
    for layer in lora_layers(model).values():
        names.update(layer.lora_A.keys())
    return sorted(names)


def _base_name(name: str) -> str:
    """A parameter name with peft's wrapper removed (``x.to_q.base_layer.weight`` -> ``x.to_q.weight``)."""
    return name.replace(".base_layer.", ".")


def adapter_state(model: nn.Module, name: str = "default") -> dict[str, torch.Tensor]:
    """The factors of adapter ``name``: {full module name + ".lora_A.weight" / ".lora_B.weight": tensor}."""
    out = {}
    for module_name, layer in lora_layers(model).items():
        if name in layer.lora_A:
            for factor in LORA_FACTORS:
                out[f"{module_name}.{factor}.weight"] = getattr(layer, factor)[name].weight.detach()
    return out


def is_lora_parameter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def remove_adapters(model: nn.Module) -> int:
    """Replace every wrapped layer by its base layer (in place); returns how many were unwrapped."""
    layers = lora_layers(model)
    for name, layer in layers.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    return len(layers)


# ----------------------------------------------------------------------------------------------------------------
# Base model identity
# ----------------------------------------------------------------------------------------------------------------


def model_kind(config: ModelConfig) -> str:
    """The released preset whose networks and schedule the config has (``"512"``, ...), else the config's name."""
    def key(c: ModelConfig) -> tuple:
        unet = {f.name: getattr(c.unet, f.name) for f in fields(c.unet) if f.name != "gradient_checkpointing"}
        return (json.dumps(unet, sort_keys=True, default=list), c.resampler, c.schedule, c.interp_mode,
                c.fs_condition_type)

    ours = key(config)
    return next((name for name, preset in PRESETS.items() if key(preset) == ours), config.name)


def base_checksum(model: DynamiCrafter) -> str:
    """sha256 of the U-Net and P weights (names, shapes and values rounded to bf16, in name order), so the same
    file loaded in fp32, fp16 or bf16 gives the same value; adapter factors are left out."""
    digest = hashlib.sha256()
    for component in COMPONENTS:
        params = {_base_name(n): p for n, p in model.component(component).named_parameters()
                  if not is_lora_parameter(n)}
        for name in sorted(params):
            tensor = params[name].detach().to("cpu", torch.bfloat16).contiguous()
            digest.update(f"{component}.{name}:{tuple(tensor.shape)};".encode())
            digest.update(tensor.view(torch.int16).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# The adapter file
# ----------------------------------------------------------------------------------------------------------------


def to_file_name(name: str) -> str:
    """Our ``unet.<module>.lora_A.weight`` -> the released module name, ``model.diffusion_model.<…>.lora_A.weight``."""
    component, _, rest = name.partition(".")
    module, _, factor = rest.rpartition(".lora_")
    prefix, keymap = COMPONENTS[component]
    return f"{prefix}{keymap.to_official(module + '.weight').removesuffix('.weight')}.lora_{factor}"


def from_file_name(name: str) -> str | None:
    """Inverse of :func:`to_file_name`; None for a name outside the U-Net and P."""
    for component, (prefix, keymap) in COMPONENTS.items():
        if name.startswith(prefix):
            module, _, factor = name[len(prefix):].rpartition(".lora_")
            if not factor:
                return None
            return f"{component}.{keymap.to_ours(module + '.weight').removesuffix('.weight')}.lora_{factor}"
    return None


def save_adapter(path: str | os.PathLike, state: Mapping[str, torch.Tensor], spec: LoraSpec, base_kind: str,
                 checksum: str, training: Mapping[str, Any] | None = None) -> Path:
    """Write an adapter file atomically; ``state``: {our full module name + ".lora_A/B.weight": tensor}."""
    from safetensors.torch import save_file

    from dynamicrafter import __version__
    from dynamicrafter.media import atomic_path

    if not state:
        raise UserError("no LoRA factors to save: the model holds no adapter")
    tensors = {to_file_name(n): t.detach().to("cpu", torch.float32).contiguous() for n, t in sorted(state.items())}
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "dynamicrafter_version": __version__,
                "base_model": base_kind, "base_checksum": checksum, **spec.to_metadata(),
                "num_layers": str(len(tensors) // 2), "training": json.dumps(dict(training or {}), sort_keys=True)}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


@dataclass
class AdapterFile:
    path: Path
    spec: LoraSpec
    base_kind: str
    base_checksum: str
    tensors: dict[str, torch.Tensor]  # our full names (unet.… .lora_A.weight)
    metadata: dict[str, str]

    def describe(self) -> str:
        return (f"a rank-{self.spec.rank} LoRA adapter ({self.spec.targets}) for the '{self.base_kind}' model "
                f"(base {self.base_checksum[:19]}…)")


def read_adapter(path: str | os.PathLike) -> AdapterFile:
    """Read and check an adapter file (format, names); an error naming the file when it is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"LoRA file not found: '{path}'")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise UserError(f"'{path}' is not a readable .safetensors LoRA file ({' '.join(str(e).split())[:200]})") from e
    if metadata.get("format") != FORMAT:
        raise UserError(f"'{path}' is not a DynamiCrafter LoRA adapter (no '{FORMAT}' metadata): write adapters with "
                        f"'dynamicrafter train --lora RANK'")
    tensors = {}
    for key, tensor in raw.items():
        ours = from_file_name(key)
        if ours is None:
            raise UserError(f"'{path}': unknown tensor '{key}' (a DynamiCrafter LoRA holds model.diffusion_model.* "
                            f"and image_proj_model.* .lora_A / .lora_B weights)")
        tensors[ours] = tensor
    return AdapterFile(path, LoraSpec.from_metadata(metadata), metadata.get("base_model", "?"),
                       metadata.get("base_checksum", ""), tensors, metadata)


def check_adapter(adapter: AdapterFile, model: DynamiCrafter, checksum: str | None = None) -> list[str]:
    """The wrapped module names of ``adapter`` after checking it against ``model``: another model kind, a layer the
    model lacks or a mis-shaped factor is refused; other base weights (``checksum``) warn."""
    kind = model_kind(model.config)
    trained_for = f"'{adapter.path}' is {adapter.describe()}"
    if adapter.base_kind != kind:
        raise UserError(f"{trained_for}; the loaded model is '{kind}': load the '{adapter.base_kind}' checkpoint")
    modules = wrappable_modules(model)
    for name, tensor in sorted(adapter.tensors.items()):
        module_name = name.rsplit(".lora_", 1)[0]
        module = modules.get(module_name)
        if module is None:
            raise UserError(f"{trained_for}; the loaded model has no layer '{module_name}' for its tensor "
                            f"'{to_file_name(name)}'")
        expected = _factor_shape(module, name.rsplit(".lora_", 1)[1].split(".")[0], adapter.spec.rank)
        if tuple(tensor.shape) != expected:
            raise UserError(f"{trained_for}; its tensor '{to_file_name(name)}' has shape {tuple(tensor.shape)}, the "
                            f"loaded model needs {expected}")
    if checksum is not None and adapter.base_checksum and adapter.base_checksum != checksum:
        warnings.warn(f"'{adapter.path}' was trained on other '{kind}' weights (base {adapter.base_checksum[:19]}…, "
                      f"loaded {checksum[:19]}…): its effect may differ", UserWarning, stacklevel=3)
    return sorted({n.rsplit(".lora_", 1)[0] for n in adapter.tensors})


def _factor_shape(module: nn.Module, factor: str, rank: int) -> tuple[int, ...]:
    if isinstance(module, nn.Linear):
        return (rank, module.in_features) if factor == "A" else (module.out_features, rank)
    assert isinstance(module, nn.Conv2d)
    if factor == "A":
        return (rank, module.in_channels // module.groups, *module.kernel_size)
    return (module.out_channels, rank, 1, 1)


# ----------------------------------------------------------------------------------------------------------------
# Adapters in use on a model (the pipeline's load / scale / fuse / unload)
# ----------------------------------------------------------------------------------------------------------------


class LoadedAdapters:
    """The adapters loaded on ``model`` and their scales. Scale 0 takes an adapter out of the computation (the
    output is then exactly the model's without it); :meth:`fuse` adds the active adapters into the base weights
    (keeping a copy of the original weights on the CPU, so that :meth:`unload` restores them bit for bit)."""

    def __init__(self, model: DynamiCrafter):
        self.model = model
        self.scales: dict[str, float] = {}
        self.files: dict[str, Path] = {}
        self.fused = False
        self._backup: dict[str, torch.Tensor] = {}
        self._checksum: str | None = None

    def load(self, path: str | os.PathLike, scale: float = 1.0, name: str | None = None) -> str:
        adapter = read_adapter(path)
        name = name or adapter.path.stem
        if name in self.scales:
            raise UserError(f"a LoRA named '{name}' is already loaded (from '{self.files[name]}'): pass another name")
        if self.fused:
            raise UserError("the loaded LoRA adapters are fused into the weights: unload_lora() before loading more")
        if self._checksum is None:
            self._checksum = base_checksum(self.model)  # of the base weights, before any adapter
        modules = check_adapter(adapter, self.model, self._checksum)
        ref = next(self.model.unet.parameters())
        add_adapter(self.model, adapter.spec, name, modules)
        layers = lora_layers(self.model)
        with torch.no_grad():
            for key, tensor in adapter.tensors.items():
                module_name, _, factor = key.rpartition(".lora_")
                getattr(layers[module_name], f"lora_{factor[0]}")[name].weight.copy_(tensor.to(ref.device))
        self.model.requires_grad_(False)
        self.scales[name], self.files[name] = float(scale), adapter.path
        self._apply()
        return name

    def set_scale(self, name: str, scale: float) -> None:
        if name not in self.scales:
            raise UserError(f"no LoRA named '{name}' is loaded (loaded: {', '.join(self.scales) or 'none'})")
        if self.fused:
            raise UserError("the LoRA adapters are fused into the weights: unload_lora() and load them again to "
                            "change a scale")
        self.scales[name] = float(scale)
        self._apply()

    def _apply(self) -> None:
        """Give every wrapped layer the scales and the active set (adapters with a non-zero scale)."""
        active = [n for n, s in self.scales.items() if s != 0.0]
        for layer in lora_layers(self.model).values():
            for name, scale in self.scales.items():
                layer.set_scale(name, scale)
            layer.set_adapter(active)
        self.model.requires_grad_(False)

    def fuse(self) -> None:
        if not self.scales:
            raise UserError("no LoRA is loaded: load_lora(path) first")
        if self.fused:
            return
        active = [n for n, s in self.scales.items() if s != 0.0]
        with torch.no_grad():
            for module_name, layer in lora_layers(self.model).items():
                if any(n in layer.lora_A for n in active):
                    self._backup[module_name] = layer.get_base_layer().weight.detach().to("cpu", copy=True)
                    layer.merge(adapter_names=[n for n in active if n in layer.lora_A])
        self.fused = True

    def unload(self) -> None:
        """Remove every adapter; the base weights are restored exactly (also after :meth:`fuse`)."""
        layers = lora_layers(self.model)
        with torch.no_grad():
            for module_name, weight in self._backup.items():
                base = layers[module_name].get_base_layer().weight
                base.copy_(weight.to(base.device))
        remove_adapters(self.model)
        self.model.requires_grad_(False)
        self.scales.clear()
        self.files.clear()
        self._backup.clear()
        self.fused = False


def parse_lora_option(text: str) -> tuple[Path, float]:
    """``FILE[:SCALE]`` (the CLI's ``--lora``) -> (path, scale); the scale defaults to 1."""
    path, sep, scale = str(text).rpartition(":")
    if sep:
        try:
            return Path(path), float(scale)
        except ValueError:
            pass  # a ':' inside the path
    return Path(text), 1.0


def load_lora_options(pipe: Any, options: Iterable[str] | None, log: Any = print) -> None:
    """Load the ``--lora FILE[:SCALE]`` adapters onto a pipeline (``pipe.load_lora``), saying each one."""
    for option in options or ():
        path, scale = parse_lora_option(option)
        name = pipe.load_lora(path, scale)
        log(f"LoRA '{name}' ({path}) at scale {scale:g}")
