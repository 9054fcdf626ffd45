"""Diffusers-style model folders, and Hugging Face cache folders of the released checkpoints.

A folder written by :func:`save_pretrained` (``dynamicrafter convert SRC OUT_DIR``)::

    model_index.json            the components and their classes, plus this project's whole ModelConfig
    unet/                       config.json (UNetConfig) + diffusion_pytorch_model.safetensors (our tensor names)
    image_proj/                 config.json (ResamplerConfig) + diffusion_pytorch_model.safetensors
    vae/                        diffusers AutoencoderKL: config.json + diffusion_pytorch_model.safetensors
    text_encoder/               transformers CLIPTextModel: config.json + model.safetensors
    image_encoder/              transformers CLIPVisionModel: config.json + model.safetensors
    tokenizer/                  transformers CLIPTokenizer: vocab.json, merges.txt, tokenizer_config.json, ...
    scheduler/                  diffusers DDIMScheduler: scheduler_config.json (+ this project's schedule fields)

The parts that a kept library can read are written in its format: ``AutoencoderKL.from_pretrained(DIR,
subfolder="vae")`` and ``CLIPTextModel.from_pretrained(DIR, subfolder="text_encoder")`` compute what our networks
compute. The text encoder holds the blocks DynamiCrafter uses: OpenCLIP's tower is read at its penultimate block
followed by the final LayerNorm, so the folder has ``layers_used`` blocks (23 of the released 24; the last,
unused block is left out, as in the diffusers folders of Stable Diffusion 2) and ``last_hidden_state`` is our
text context. OpenCLIP's fused attention input projection is stored as separate q / k / v (the split happens when a
released file is read, :mod:`dynamicrafter.keymap`). The image encoder's ``last_hidden_state`` (before
``post_layernorm``) is our image context; its preprocessing (antialiased bicubic resize to 224, CLIP
normalization) is ours and is not written as an image processor. The tokenizer pads with "!" (id 0) as OpenCLIP
pads with zeros (as Stable Diffusion 2's tokenizer does); like that one it splits "!" in a prompt off as its own
token (OpenCLIP merges "!!"), and it does not unescape HTML entities as OpenCLIP's cleaning does. Prompts without
these give the same ids as :mod:`dynamicrafter.models.tokenizer`.

The whole folder is written beside its destination and renamed into place: an interrupted conversion leaves no
partial folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from dynamicrafter.checkpoint import build_empty, load_model, materialize_buffers
from dynamicrafter.config import ModelConfig, VAEConfig
from dynamicrafter.errors import CheckpointError, UserError
from dynamicrafter.model import COMPONENTS, DynamiCrafter

MODEL_INDEX = "model_index.json"
CHECKPOINT_NAME = "model.ckpt"  # what the released Hugging Face repositories hold
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
TRANSFORMERS_WEIGHTS = "model.safetensors"
# component -> (library, class) in model_index.json, weights file, and the prefix of the library's tensor names
LAYOUT: dict[str, tuple[str, str, str, str]] = {
    "unet": ("dynamicrafter", "UNet3D", DIFFUSERS_WEIGHTS, ""),
    "image_proj": ("dynamicrafter", "Resampler", DIFFUSERS_WEIGHTS, ""),
    "vae": ("diffusers", "AutoencoderKL", DIFFUSERS_WEIGHTS, ""),
    "text_encoder": ("transformers", "CLIPTextModel", TRANSFORMERS_WEIGHTS, "text_model."),
    "image_encoder": ("transformers", "CLIPVisionModel", TRANSFORMERS_WEIGHTS, "vision_model."),
}
# where our modules keep the library's network inside the component
INNER_PREFIX = {"unet": "", "image_proj": "", "vae": "autoencoder.", "text_encoder": "transformer.",
                "image_encoder": "transformer."}
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------


def save_pretrained(model: DynamiCrafter, out_dir: str | os.PathLike, dtype: torch.dtype | None = None,
                    overwrite: bool = False) -> Path:
    """Write ``model`` as a diffusers-style folder (see the module docstring), atomically."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise UserError(f"'{out_dir}' already exists and is not empty: choose another OUT_DIR or pass --overwrite")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        _write_folder(model, tmp, dtype)
        _swap_into_place(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_folder(model: DynamiCrafter, folder: Path, dtype: torch.dtype | None) -> None:
    config = replace(model.config, unet=replace(model.config.unet, gradient_checkpointing=False))
    dtype = dtype or model.dtype
    for name in COMPONENTS:
        library, class_name, weights, prefix = LAYOUT[name]
        inner = INNER_PREFIX[name]
        state = {prefix + k[len(inner):]: v for k, v in model.component(name).state_dict().items()
                 if k.startswith(inner) and not k.endswith("position_ids")}
        if any(".base_layer." in k or ".lora_" in k for k in state):
            raise UserError("the model holds LoRA adapters: fuse them into a checkpoint first or convert the base")
        _write_json(folder / name / "config.json", component_config(model, config, name))
        _write_tensors(folder / name / weights, state, dtype)
    write_tokenizer(folder / "tokenizer")
    _write_json(folder / "scheduler" / "scheduler_config.json", scheduler_config(config))
    from dynamicrafter import __version__

    index: dict[str, Any] = {"_class_name": "DynamiCrafterPipeline", "_dynamicrafter_version": __version__,
                             "torch_dtype": DTYPE_NAMES.get(dtype, str(dtype))}
    index.update({name: list(LAYOUT[name][:2]) for name in COMPONENTS})
    index["tokenizer"] = ["transformers", "CLIPTokenizer"]
    index["scheduler"] = ["diffusers", "DDIMScheduler"]
    index["dynamicrafter_config"] = config.to_dict()
    _write_json(folder / MODEL_INDEX, index)


def component_config(model: DynamiCrafter, config: ModelConfig, name: str) -> dict[str, Any]:
    """config.json of one component: the library's own for vae / text_encoder / image_encoder, ours otherwise."""
    if name in ("unet", "image_proj"):
        ours = config.unet if name == "unet" else config.resampler
        return {"_class_name": LAYOUT[name][1], **asdict(ours)}
    if name == "vae":
        return diffusers_vae_config(config.vae)
    hf = model.component(name).transformer.config.to_dict()
    hf = {k: v for k, v in hf.items() if not k.startswith("_") and k not in ("torch_dtype", "dtype")}
    hf["architectures"] = [LAYOUT[name][1]]
    if name == "text_encoder":  # OpenCLIP's ids (the library defaults differ): padding 0, start / end of text
        hf.update(pad_token_id=0, bos_token_id=49406, eos_token_id=49407, hidden_act="gelu")
    return hf


def diffusers_vae_config(vae: VAEConfig) -> dict[str, Any]:
    """diffusers' AutoencoderKL arguments of the same network (our KLAutoencoder uses its tensor names)."""
    widths = [vae.base_channels * m for m in vae.channel_mult]
    return {"_class_name": "AutoencoderKL", "in_channels": vae.in_channels, "out_channels": vae.in_channels,
            "latent_channels": vae.latent_channels, "block_out_channels": widths,
            "layers_per_block": vae.num_res_blocks, "norm_num_groups": vae.norm_groups, "act_fn": "silu",
            "down_block_types": ["DownEncoderBlock2D"] * len(widths),
            "up_block_types": ["UpDecoderBlock2D"] * len(widths), "scaling_factor": vae.scale_factor}


def scheduler_config(config: ModelConfig) -> dict[str, Any]:
    """diffusers DDIMScheduler settings of the model's schedule (dynamic rescale, which DDIMScheduler lacks, is in
    model_index.json's ``dynamicrafter_config`` with the rest of the schedule)."""
    s, d = config.schedule, config.defaults
    return {"_class_name": "DDIMScheduler", "num_train_timesteps": s.num_timesteps, "beta_start": s.linear_start,
            "beta_end": s.linear_end, "beta_schedule": "scaled_linear",
            "prediction_type": "v_prediction" if s.parameterization == "v" else "epsilon",
            "rescale_betas_zero_snr": s.rescale_betas_zero_snr, "clip_sample": False, "set_alpha_to_one": False,
            "steps_offset": 1 if d.timestep_spacing == "uniform" else 0,
            "timestep_spacing": "trailing" if d.timestep_spacing == "uniform_trailing" else "leading"}


def write_tokenizer(folder: Path) -> None:
    """The CLIP BPE vocabulary in transformers' CLIPTokenizer files (vocab.json, merges.txt, configs)."""
    from dynamicrafter.models.tokenizer import END_OF_TEXT, START_OF_TEXT, get_tokenizer

    tok = get_tokenizer()
    names = {START_OF_TEXT: "<|startoftext|>", END_OF_TEXT: "<|endoftext|>"}
    vocab = {names.get(token, token): i for token, i in tok.encoder.items()}
    merges = sorted(tok.bpe_ranks, key=tok.bpe_ranks.__getitem__)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "vocab.json", vocab)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "!"}
    _write_json(folder / "special_tokens_map.json", special)
    _write_json(folder / "tokenizer_config.json", {"tokenizer_class": "CLIPTokenizer", "model_max_length":
                                                   tok.context_length, "do_lower_case": True, **special})


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_tensors(path: Path, state: Mapping[str, torch.Tensor], dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    out = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous() for k, v in state.items()}
    save_file(out, str(path), metadata={"format": "pt"})


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------


def is_pretrained_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / MODEL_INDEX).is_file()


def find_snapshot_checkpoint(path: str | os.PathLike) -> Path | None:
    """The ``model.ckpt`` of a Hugging Face cache folder of a released repository: a snapshot folder
    (``models--Doubiiu--DynamiCrafter_512/snapshots/<commit>/``) or the repository folder itself (its ``refs/main``
    names the snapshot). None when ``path`` is no such folder."""
    path = Path(path)
    if (path / CHECKPOINT_NAME).is_file():
        return path / CHECKPOINT_NAME
    snapshots = path / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = path / "refs" / "main"
    candidates = [snapshots / ref.read_text().strip()] if ref.is_file() else sorted(snapshots.iterdir())
    found = [c / CHECKPOINT_NAME for c in candidates if (c / CHECKPOINT_NAME).is_file()]
    return found[-1] if found else None


def load_pretrained(folder: str | os.PathLike, config: ModelConfig | None = None, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> DynamiCrafter:
    """Build the model of a folder written by :func:`save_pretrained`, strictly (``config`` overrides the stored
    one, e.g. to read a 512 folder as 512_interp)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    index = json.loads((folder / MODEL_INDEX).read_text())
    if "dynamicrafter_config" not in index:
        raise CheckpointError(f"'{folder / MODEL_INDEX}' was not written by dynamicrafter convert (no "
                              f"dynamicrafter_config): convert the model's checkpoint with 'dynamicrafter convert'")
    stored = ModelConfig.from_dict(index["dynamicrafter_config"])
    model = build_empty(config or stored)
    for name in COMPONENTS:
        _, _, weights, prefix = LAYOUT[name]
        path = folder / name / weights
        if not path.is_file():
            raise CheckpointError(f"'{folder}' has no {name} weights ({name}/{weights}): the folder is incomplete")
        inner = INNER_PREFIX[name]
        state = {inner + k.removeprefix(prefix): v.to(dtype) if v.is_floating_point() else v
                 for k, v in load_file(str(path)).items() if not k.endswith("position_ids")}
        try:
            model.component(name).load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            first = " ".join(str(e).split())[:300]
            raise CheckpointError(f"'{path}' does not fit the model of '{folder / MODEL_INDEX}': {first}") from None
    materialize_buffers(model)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_folder(folder: str | os.PathLike, config: ModelConfig | None = None, *,
                text_encoder_path: str | os.PathLike | None = None,
                image_encoder_path: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> DynamiCrafter:
    """A diffusers-style folder, or a Hugging Face cache folder holding a released ``model.ckpt`` (no network)."""
    if is_pretrained_folder(folder):
        return load_pretrained(folder, config, device, dtype)
    checkpoint = find_snapshot_checkpoint(folder)
    if checkpoint is None:
        raise CheckpointError(f"'{folder}' is a folder without {MODEL_INDEX} (dynamicrafter convert) or "
                              f"{CHECKPOINT_NAME} (a Hugging Face snapshot of a released model): pass a checkpoint "
                              f"file or such a folder")
    return load_model(checkpoint, config, text_encoder_path=text_encoder_path, image_encoder_path=image_encoder_path,
                      device=device, dtype=dtype)


def load_model_or_folder(path: str | os.PathLike, config: ModelConfig | None = None, *,
                         text_encoder_path: str | os.PathLike | None = None,
                         image_encoder_path: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                         dtype: torch.dtype = torch.float32, skip: Iterable[str] = ()) -> DynamiCrafter:
    """What ``--checkpoint`` names: a checkpoint file (:func:`dynamicrafter.checkpoint.load_model`, with ``skip``)
    or a folder (:func:`load_folder`, loaded whole)."""
    if Path(path).is_dir():
        return load_folder(path, config, text_encoder_path=text_encoder_path, image_encoder_path=image_encoder_path,
                           device=device, dtype=dtype)
    return load_model(path, config, text_encoder_path=text_encoder_path, image_encoder_path=image_encoder_path,
                      device=device, dtype=dtype, skip=skip)
