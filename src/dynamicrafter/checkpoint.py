"""Reading and writing checkpoints in the released layout (and the project's own).

Supported inputs:

* the released Lightning ``model.ckpt`` (``torch.load(..., weights_only=True)``: no pickled code runs; memory-mapped,
  so a 10 GB file is not copied into memory a second time), DeepSpeed files (``module`` / ``_forward_module.``);
* ``.safetensors`` with the same tensor names (e.g. fp16/bf16 "pruned" repacks without the CLIP towers);
* separate tower files: OpenCLIP ViT-H/14 weights with OpenCLIP's own names (``open_clip_pytorch_model.*``), or the
  SD 2.1 text encoder in transformers' format (``text_model.*`` or bare ``embeddings.*`` / ``encoder.*`` names);
* partial files holding one network (e.g. only ``model.diffusion_model.*``) loaded onto an existing model;
* the project's own ``.safetensors`` files, which carry their :class:`ModelConfig` in the metadata.

Names are translated with the explicit maps of :mod:`dynamicrafter.keymap`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dynamicrafter import keymap as K
from dynamicrafter.config import PRESETS, ModelConfig
from dynamicrafter.errors import CheckpointError
from dynamicrafter.model import DynamiCrafter

log = logging.getLogger(__name__)

CONFIG_METADATA_KEY = "dynamicrafter_config"
RELEASES_URL = ("https://huggingface.co/Doubiiu (DynamiCrafter, DynamiCrafter_512, DynamiCrafter_1024, "
                "DynamiCrafter_512_Interp)")

# Schedule buffers stored in the released files; recomputed from the config (and checked against it).
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "scale_arr",
)


@dataclass(frozen=True)
class Component:
    """Where one network lives in the released file and in :class:`DynamiCrafter`."""

    name: str  # attribute of DynamiCrafter
    official_prefix: str
    our_prefix: str  # within the component module
    keymap: K.KeyMap
    description: str


def components(config: ModelConfig) -> list[Component]:
    return [
        Component("unet", "model.diffusion_model.", "", K.UNET_KEYMAP, "3D U-Net"),
        Component("image_proj", "image_proj_model.", "", K.RESAMPLER_KEYMAP, "query transformer P (Resampler)"),
        Component("vae", "first_stage_model.", "autoencoder.", K.vae_keymap(len(config.vae.channel_mult)), "VAE"),
        Component("text_encoder", "cond_stage_model.model.", "transformer.", K.CLIP_TEXT_KEYMAP,
                  "CLIP text encoder"),
        Component("image_encoder", "embedder.model.visual.", "transformer.", K.CLIP_VISION_KEYMAP,
                  "CLIP image encoder"),
    ]


def is_known_unused(name: str, config: ModelConfig) -> bool:
    """Official tensors that the released function does not use (and that the loader therefore skips)."""
    if name in SCHEDULE_BUFFERS:
        return True
    if name in ("cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale",
                "embedder.model.visual.proj"):
        return True
    if name.startswith("embedder.model.") and not name.startswith("embedder.model.visual."):
        return True  # text half of the image tower's CLIP model
    m = re.match(r"cond_stage_model\.model\.transformer\.resblocks\.(\d+)\.", name)
    return bool(m and int(m.group(1)) >= config.text_encoder.layers_used)  # blocks after the penultimate


# ----------------------------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------------------------


class SafetensorsDict(Mapping[str, torch.Tensor]):
    """Lazy read-only mapping over a .safetensors file (tensors are read on access)."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self._file = safe_open(str(path), framework="pt", device="cpu")
        self._keys = list(self._file.keys())
        self._key_set = set(self._keys)
        self.metadata: dict[str, str] = self._file.metadata() or {}

    def __contains__(self, key: object) -> bool:
        return key in self._key_set

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._file.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def describe(self, key: str) -> tuple[tuple[int, ...], str]:
        """(shape, dtype name) without reading the tensor."""
        view = self._file.get_slice(key)
        return tuple(view.get_shape()), str(view.get_dtype()).lower()


def read_state_dict(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """Open a checkpoint file and return its tensor mapping (lazy / memory-mapped where possible)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: '{path}' (released checkpoints: {RELEASES_URL})")
    kind = "safetensors" if path.suffix == ".safetensors" else file_kind(path)
    if kind == "safetensors":
        try:
            return SafetensorsDict(path)
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"'{path}' is not a readable .safetensors file ({_one_line(e)}); it may be truncated:"
                                  f" download it again") from e
    if kind is None:
        raise CheckpointError(f"'{path}' is not a checkpoint: neither a PyTorch file (zip archive or pickle) nor "
                              f"safetensors; check the path, or download the file again")
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            data = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as e:
        raise _load_error(path, e) from e
    return unwrap_state_dict(data, path)


def file_kind(path: Path) -> str | None:
    """What a file holds by its first bytes: "zip" (PyTorch's format), "pickle" (its legacy format),
    "safetensors", or None (none of them)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:2] == b"PK":
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"  # an 8-byte header length, then the JSON header
    return None


def _load_error(path: Path, e: Exception) -> CheckpointError:
    """torch.load's failure as one line (without torch's advice to load pickled code)."""
    msg = _one_line(e)
    if "weights_only" in str(e) or "Unpickler" in type(e).__name__ or "Unpickling" in type(e).__name__:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))  # the Python object the file asks for (not torch's advice)
        reason = f" (it refers to {found.group(1)})" if found else ""
        return CheckpointError(f"'{path}' stores pickled Python objects{reason}, which are not loaded for safety (no "
                               f"code from a file is run); re-save its state_dict with torch.save or convert it to "
                               f".safetensors")
    if isinstance(e, (zipfile.BadZipFile, EOFError)) or "zip" in msg or "central directory" in msg:
        return CheckpointError(f"'{path}' is truncated or corrupt (not a complete PyTorch zip archive); download "
                               f"it again")
    return CheckpointError(f"cannot read checkpoint '{path}': {msg}")


class StateDict(dict):
    """A tensor mapping with the file's metadata (the project's config for its own checkpoints)."""

    metadata: dict[str, str]


def unwrap_state_dict(data: object, path: Path | str = "checkpoint") -> StateDict:
    """Lightning (``state_dict``), DeepSpeed (``module`` with ``_forward_module.``) or a plain mapping."""
    metadata: dict[str, str] = {}
    if isinstance(data, Mapping) and isinstance(data.get(CONFIG_METADATA_KEY), str):
        metadata[CONFIG_METADATA_KEY] = data[CONFIG_METADATA_KEY]
    if isinstance(data, Mapping):
        if "state_dict" in data and isinstance(data["state_dict"], Mapping):
            data = data["state_dict"]
        elif "module" in data and isinstance(data["module"], Mapping):
            data = {k.removeprefix("_forward_module."): v for k, v in data["module"].items()}
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"'{path}' holds no tensor state_dict (expected a Lightning .ckpt, a DeepSpeed file "
                              f"or a .safetensors file)")
    out = StateDict(data)
    out.metadata = metadata
    return out


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


def describe(sd: Mapping[str, torch.Tensor], key: str) -> tuple[tuple[int, ...], str]:
    """(shape, dtype name) of a tensor, without reading safetensors data."""
    if isinstance(sd, SafetensorsDict):
        return sd.describe(key)
    tensor = sd[key]
    return tuple(tensor.shape), str(tensor.dtype).removeprefix("torch.")


# ----------------------------------------------------------------------------------------------------------------
# Detecting which model a file holds
# ----------------------------------------------------------------------------------------------------------------

ALPHA_KEY = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.alpha"


def detect_preset(sd: Mapping[str, torch.Tensor], path: str | os.PathLike = "") -> str | None:
    """Name of the released model a state dict holds, from its tensors (None when it is not a released layout).

    256: has the learnable lambda gates (``attn2.alpha``). 512 vs 1024: identical shapes; the dynamic-rescale
    buffer ``scale_arr`` ends at base_scale 0.7 (512) or 0.3 (1024). 512 vs 512_interp cannot be told apart from
    the tensors; a file name containing "interp" selects 512_interp.
    """
    if ALPHA_KEY in sd:
        return "256"
    if not any(k.startswith("model.diffusion_model.") for k in sd):
        return None
    if "scale_arr" in sd:
        base_scale = float(sd["scale_arr"][-1])
        if abs(base_scale - 0.3) < 1e-4:
            return "1024"
    return "512_interp" if "interp" in Path(path).name.lower() or "interp" in str(path).lower() else "512"


def config_from_metadata(sd: Mapping[str, torch.Tensor]) -> ModelConfig | None:
    metadata = getattr(sd, "metadata", None) or {}
    if CONFIG_METADATA_KEY in metadata:
        return ModelConfig.from_dict(json.loads(metadata[CONFIG_METADATA_KEY]))
    return None


# ----------------------------------------------------------------------------------------------------------------
# Converting
# ----------------------------------------------------------------------------------------------------------------


def _source_layout(sd: Mapping[str, torch.Tensor], comp: Component) -> tuple[str, str] | None:
    """How a file stores a component: (layout, prefix) with layout 'official', 'ours' or 'openclip'/'hf'."""
    keys = list(sd.keys())
    if any(k.startswith(comp.official_prefix) for k in keys):
        return "official", comp.official_prefix
    ours = f"{comp.name}.{comp.our_prefix}"
    if any(k.startswith(ours) for k in keys):
        return "ours", ours
    if comp.name == "text_encoder":
        if "token_embedding.weight" in sd and any(k.startswith("transformer.resblocks.") for k in keys):
            return "official", ""  # OpenCLIP's own names, no prefix
        for prefix in ("text_model.", ""):
            if f"{prefix}embeddings.token_embedding.weight" in sd:
                return "hf", prefix
    if comp.name == "image_encoder":
        if "visual.conv1.weight" in sd:
            return "official", "visual."
        if "vision_model.embeddings.patch_embedding.weight" in sd:
            return "hf", "vision_model."
    return None


def convert_component(sd: Mapping[str, torch.Tensor], comp: Component, config: ModelConfig,
                      dtype: torch.dtype | None = None) -> tuple[dict[str, torch.Tensor], list[str]] | None:
    """Tensors of one component in our names (relative to the component module), plus the source names used.

    Returns None when the file does not hold the component.
    """
    found = _source_layout(sd, comp)
    if found is None:
        return None
    layout, prefix = found
    out: dict[str, torch.Tensor] = {}
    used: list[str] = []
    for key in sd.keys():
        if not key.startswith(prefix):
            continue
        rel = key[len(prefix) :]
        if layout == "official":
            full_official = comp.official_prefix + rel
            if is_known_unused(full_official, config):
                used.append(key)
                continue
            if prefix == "" and comp.name == "text_encoder" and (rel.startswith("visual.") or rel in (
                    "text_projection", "logit_scale")):
                continue  # the image half / heads of a standalone OpenCLIP file
            pairs = comp.keymap.convert_to_ours(rel, sd[key])
            pairs = [(comp.our_prefix + name, t) for name, t in pairs]
        elif layout == "hf":
            if rel.endswith("position_ids"):
                continue  # a buffer that older transformers versions saved
            m = re.match(r"encoder\.layers\.(\d+)\.", rel)
            if m and int(m.group(1)) >= config.text_encoder.layers_used:
                used.append(key)
                continue
            pairs = [(comp.our_prefix + rel, sd[key])]
        else:
            pairs = [(key[len(f"{comp.name}.") :], sd[key])]
        for name, tensor in pairs:
            out[name] = tensor if dtype is None or not tensor.is_floating_point() else tensor.to(dtype)
        used.append(key)
    return out, used


def _mismatch_message(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], comp: Component,
                      config: ModelConfig, hint: str) -> str | None:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    misshaped = [k for k in got if k in expected and tuple(got[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or misshaped):
        return None

    def official(name: str) -> str:
        rel = name[len(comp.our_prefix) :] if name.startswith(comp.our_prefix) else name
        return comp.official_prefix + comp.keymap.to_official(rel)

    parts = []
    if misshaped:
        k = misshaped[0]
        parts.append(f"tensor '{official(k)}' has shape {_fmt(got[k].shape)} but config '{config.name}' expects "
                     f"{_fmt(expected[k].shape)} ({len(misshaped)} mis-shaped)")
    if missing:
        parts.append(f"missing {len(missing)} tensor(s), first '{official(missing[0])}'")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s), first '{official(unexpected[0])}'")
    return f"{comp.description} does not match: " + "; ".join(parts) + hint


def _fmt(shape: Iterable[int]) -> str:
    shape = tuple(shape)
    return "x".join(map(str, shape)) if shape else "scalar"


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------


def build_empty(config: ModelConfig) -> DynamiCrafter:
    """The model on the meta device (no memory, no init): tensors are assigned when loading."""
    with torch.device("meta"):
        return DynamiCrafter(config)


def load_model(
    path: str | os.PathLike,
    config: ModelConfig | None = None,
    *,
    text_encoder_path: str | os.PathLike | None = None,
    image_encoder_path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    skip: Iterable[str] = (),
) -> DynamiCrafter:
    """Build a :class:`DynamiCrafter` from a checkpoint (+ optional tower files), strictly.

    Without ``config`` the model kind is detected from the tensors (or taken from the file's metadata).
    Every parameter must be provided by the files: a missing network raises an error that says which file to add.
    The tensors are memory-mapped and assigned to the networks without a second copy (a file in the requested
    ``dtype`` on the CPU is used in place). Networks named in ``skip`` (see ``model.COMPONENTS``) are left on the
    meta device, without memory; :func:`load_components` loads them later. Folders (diffusers-style, Hugging Face
    snapshots) are read by :func:`dynamicrafter.pretrained.load_model_or_folder`.
    """
    path, skip = Path(path), set(skip)
    sd = read_state_dict(path)
    stored = config_from_metadata(sd)
    detected = stored.name if stored is not None else detect_preset(sd, path)
    if config is None:
        config = stored
    if config is None:
        if detected is None:
            raise CheckpointError(f"'{path}' is not a DynamiCrafter checkpoint (no model.diffusion_model.* tensors); "
                                  f"pass the released model.ckpt or give --config")
        config = PRESETS[detected]
        log.info("detected model '%s' from the checkpoint tensors", detected)
    _check_schedule(sd, config, path, detected)
    if stored is not None and stored.name != config.name:
        hint = f" (the file stores its own config '{stored.name}': leave out --config)"
    elif detected and detected != config.name:
        hint = f" (the file looks like preset '{detected}': pass --config {detected})"
    else:
        hint = " (pass --config with the preset or YAML file the checkpoint was trained with)"
    model = build_empty(config)
    sources = _sources(path, sd, text_encoder_path, image_encoder_path)
    del sd
    for comp in components(config):  # a skipped network must still be in the files (it is loaded later)
        if comp.name in skip and not any(_source_layout(src, comp) for _, src in sources):
            raise CheckpointError(_missing_component_message(comp, path))
    _assign_components(model, [c.name for c in components(config) if c.name not in skip], sources, device, dtype,
                       hint)
    return model.eval().requires_grad_(False)


def load_components(model: DynamiCrafter, names: Iterable[str], path: str | os.PathLike, *,
                    text_encoder_path: str | os.PathLike | None = None,
                    image_encoder_path: str | os.PathLike | None = None,
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
    """(Re)load the networks ``names`` of ``model`` from the files, replacing their tensors (e.g. networks that
    :func:`load_model` skipped or that were released to the meta device to save memory)."""
    sources = _sources(Path(path), read_state_dict(path), text_encoder_path, image_encoder_path)
    _assign_components(model, list(names), sources, device, dtype, "")


def _sources(path: Path, sd: Mapping[str, torch.Tensor], *extra: str | os.PathLike | None
             ) -> list[tuple[Path, Mapping[str, torch.Tensor]]]:
    """The checkpoint and the optional tower files, opened (memory-mapped, nothing read yet)."""
    return [(path, sd)] + [(Path(p), read_state_dict(p)) for p in extra if p is not None]


def _assign_components(model: DynamiCrafter, names: list[str], sources: list[tuple[Path, Mapping[str, torch.Tensor]]],
                       device: torch.device | str, dtype: torch.dtype, hint: str) -> None:
    """Convert, check and assign the tensors of each named network from the first source that holds it."""
    config = model.config
    for comp in components(config):
        if comp.name not in names:
            continue
        module = model.component(comp.name)
        expected = module.state_dict()
        found = next(((p, c) for p, src in sources if (c := convert_component(src, comp, config, dtype)) is not None),
                     None)
        if found is None:
            raise CheckpointError(_missing_component_message(comp, sources[0][0]))
        src_path, (tensors, _) = found
        message = _mismatch_message(expected, tensors, comp, config, hint)
        if message:
            raise CheckpointError(f"'{src_path}': {message}")
        module.load_state_dict(tensors, strict=True, assign=True)
        del tensors, found
        materialize_buffers(module)
        module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _missing_component_message(comp: Component, path: Path) -> str:
    if comp.name == "text_encoder":
        return (f"'{path}' has no CLIP text encoder (cond_stage_model.*): pass --text-encoder PATH with the OpenCLIP "
                f"ViT-H-14 laion2b_s32b_b79k weights (open_clip_pytorch_model.safetensors/.bin) or the SD 2.1 text "
                f"encoder in transformers format")
    if comp.name == "image_encoder":
        return (f"'{path}' has no CLIP image encoder (embedder.*): pass --image-encoder PATH with the OpenCLIP "
                f"ViT-H-14 laion2b_s32b_b79k weights (open_clip_pytorch_model.safetensors/.bin)")
    return f"'{path}' has no {comp.description} ({comp.official_prefix}*): it is not a complete DynamiCrafter file"


def _check_schedule(sd: Mapping[str, torch.Tensor], config: ModelConfig, path: Path, detected: str | None) -> None:
    """The released files store their noise schedule; refuse a config whose schedule differs."""
    if "alphas_cumprod" not in sd:
        return
    from dynamicrafter.diffusion.schedule import NoiseSchedule

    theirs = sd["alphas_cumprod"]
    # compare in the file's precision (fp16/bf16 repacks store the buffers rounded)
    ours = NoiseSchedule.from_config(config.schedule).alphas_cumprod.to(theirs.dtype).float()
    theirs = theirs.float()
    if theirs.shape != ours.shape or not torch.allclose(theirs, ours, rtol=1e-4, atol=1e-6):
        hint = f"; the file holds model '{detected}'" if detected else ""
        raise CheckpointError(f"'{path}': its noise schedule (alphas_cumprod) differs from config '{config.name}' "
                              f"(zero-terminal-SNR / timesteps / betas mismatch{hint})")
    has = "scale_arr" in sd
    if has != config.schedule.use_dynamic_rescale:
        raise CheckpointError(f"'{path}': the file {'has' if has else 'lacks'} dynamic rescale (scale_arr) but config "
                              f"'{config.name}' {'does not use' if has else 'uses'} it; pass the matching --config")


def materialize_buffers(model: nn.Module) -> None:
    """Recreate non-persistent buffers left on the meta device (they are not stored in checkpoints)."""
    from dynamicrafter.models.clip import CLIP_MEAN, CLIP_STD

    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is None or not buf.is_meta:
                continue
            if name == "position_ids":
                value = torch.arange(buf.shape[-1]).expand(buf.shape)
            elif name in ("mean", "std"):
                value = torch.tensor(CLIP_MEAN if name == "mean" else CLIP_STD).view(buf.shape)
            else:
                raise RuntimeError(f"no rule to materialize buffer '{name}' of {type(module).__name__}")
            module.register_buffer(name, value.to(buf.dtype), persistent=False)


def load_component(model: DynamiCrafter, name: str, path: str | os.PathLike) -> list[str]:
    """Load one network from a (partial) file onto an existing model, strictly; returns the tensor names used."""
    sd = read_state_dict(path)
    comp = next((c for c in components(model.config) if c.name == name), None)
    if comp is None:
        raise CheckpointError(f"unknown component '{name}'")
    module = model.component(name)
    converted = convert_component(sd, comp, model.config)
    if converted is None:
        raise CheckpointError(f"'{path}' holds no {comp.description} tensors ({comp.official_prefix}*)")
    tensors, used = converted
    message = _mismatch_message(module.state_dict(), tensors, comp, model.config, "")
    if message:
        raise CheckpointError(f"'{path}': {message}")
    ref = next(module.parameters())
    module.load_state_dict({k: v.to(ref.device, ref.dtype if v.is_floating_point() else v.dtype)
                            for k, v in tensors.items()}, strict=True)
    return used


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------


def official_state_dict(model: DynamiCrafter, *, include_schedule: bool = True, include_unused: bool = False,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The model's tensors under the released names.

    ``include_schedule`` adds the schedule buffers as the released code registers them; ``include_unused`` adds
    random stand-ins for the official tensors this project does not use (unused CLIP heads, the text tower's last
    block, ...) so that the key set equals a released file's exactly.
    """
    config = model.config
    out: dict[str, torch.Tensor] = {}
    for comp in components(config):
        state = {k[len(comp.our_prefix) :]: v.detach() for k, v in model.component(comp.name).state_dict().items()}
        for name, tensor in comp.keymap.convert_to_official(state).items():
            out[comp.official_prefix + name] = tensor.contiguous()
    if include_schedule:
        out.update(released_schedule_buffers(config))
    if include_unused:
        out.update(_unused_standins(config, generator))
    return out


def released_schedule_buffers(config: ModelConfig) -> dict[str, torch.Tensor]:
    """The schedule buffers exactly as the released ``register_schedule`` computes them (float64 -> float32)."""
    from dynamicrafter.diffusion.schedule import rescale_zero_terminal_snr, scaled_linear_betas

    s = config.schedule
    betas = scaled_linear_betas(s.num_timesteps, s.linear_start, s.linear_end)
    if s.rescale_betas_zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, 0)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
    v = s.parameterization == "v"
    buffers = {
        "betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev, "sqrt_alphas_cumprod": ac.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(), "log_one_minus_alphas_cumprod": torch.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": torch.zeros_like(ac) if v else (1.0 / ac).sqrt(),
        "sqrt_recipm1_alphas_cumprod": torch.zeros_like(ac) if v else (1.0 / ac - 1).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": torch.log(posterior_variance.clamp(min=1e-20)),
        "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
    }
    out = {k: t.float() for k, t in buffers.items()}
    if s.use_dynamic_rescale:
        from dynamicrafter.diffusion.schedule import dynamic_rescale_factors

        out["scale_arr"] = dynamic_rescale_factors(s.num_timesteps, s.base_scale, s.turning_step)
    return out


def _unused_standins(config: ModelConfig, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    t, v = config.text_encoder, config.image_encoder
    embed_dim = t.width  # joint CLIP embedding width (1024 for ViT-H/14)
    mlp = int(t.width * t.mlp_ratio)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * 0.02

    out = {
        "cond_stage_model.model.text_projection": rand(t.width, embed_dim),
        "cond_stage_model.model.logit_scale": torch.tensor(4.6052),
        "embedder.model.positional_embedding": rand(t.context_length, t.width),
        "embedder.model.text_projection": rand(t.width, embed_dim),
        "embedder.model.logit_scale": torch.tensor(4.6052),
        "embedder.model.visual.proj": rand(v.width, embed_dim),
        "embedder.model.token_embedding.weight": rand(t.vocab_size, t.width),
        "embedder.model.ln_final.weight": torch.ones(t.width),
        "embedder.model.ln_final.bias": torch.zeros(t.width),
    }
    for i in range(t.layers_used, t.layers):
        p = f"cond_stage_model.model.transformer.resblocks.{i}."
        out.update({
            p + "ln_1.weight": torch.ones(t.width), p + "ln_1.bias": torch.zeros(t.width),
            p + "attn.in_proj_weight": rand(3 * t.width, t.width), p + "attn.in_proj_bias": torch.zeros(3 * t.width),
            p + "attn.out_proj.weight": rand(t.width, t.width), p + "attn.out_proj.bias": torch.zeros(t.width),
            p + "ln_2.weight": torch.ones(t.width), p + "ln_2.bias": torch.zeros(t.width),
            p + "mlp.c_fc.weight": rand(mlp, t.width), p + "mlp.c_fc.bias": torch.zeros(mlp),
            p + "mlp.c_proj.weight": rand(t.width, mlp), p + "mlp.c_proj.bias": torch.zeros(t.width),
        })
    return out


def save_checkpoint(model: DynamiCrafter, path: str | os.PathLike, *, official_names: bool = True,
                    include_unused: bool = False, dtype: torch.dtype | None = None) -> Path:
    """Write the model atomically: ``.safetensors`` (config in the metadata) or a Lightning-style ``.ckpt``."""
    from dynamicrafter.media import atomic_path

    path = Path(path)
    if official_names:
        state = official_state_dict(model, include_unused=include_unused)
    else:
        state = {k: v.detach() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    state = {k: v.contiguous().cpu() for k, v in state.items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={CONFIG_METADATA_KEY: json.dumps(model.config.to_dict())})
        else:
            torch.save({"state_dict": state, CONFIG_METADATA_KEY: json.dumps(model.config.to_dict())}, tmp)
    return path
