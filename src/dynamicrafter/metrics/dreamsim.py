"""DreamSim perceptual distance (Fu et al. 2023) re-implemented for PIC, loading user-supplied local weights.

DreamSim embeds an image with one or more ViT backbones, fine-tuned with LoRA on human similarity judgements, and
measures ``D(a, b) = 1 - cos(e(a), e(b))``. This module follows the reference ``dreamsim`` package (v0.2.1):

* input: RGB resized to 224x224 (bicubic, PIL), values in [0, 1], then normalised per backbone (DINO: ImageNet
  mean/std; CLIP and OpenCLIP: OpenAI CLIP mean/std);
* ``ensemble`` (the default DreamSim): DINO ViT-B/16 + CLIP ViT-B/16 + OpenCLIP ViT-B/16 (the 0.2 release; some
  descriptions list OpenCLIP ViT-B/32, which is the single-branch ``open_clip_vitb32`` model); single-branch models
  ``dino_vitb16``, ``clip_vitb32``, ``open_clip_vitb32``;
* per-branch feature: DINO: the CLS token output by the last transformer block, *before* the final LayerNorm;
  CLIP/OpenCLIP: ``ln_post(CLS) @ proj`` (the 512-d image embedding);
* the branch features are concatenated (ensemble: 768 + 512 + 512 = 1792), centred and L2-normalised per image
  (``normalize_embeds=True``), and the distance is ``1 - cosine similarity``.

Local file format (written by ``dynamicrafter convert-dreamsim``): a safetensors file whose metadata holds
``format = dynamicrafter.dreamsim/1`` and ``dreamsim_type`` (``ensemble``, ``dino_vitb16``, ``clip_vitb32``,
``open_clip_vitb32``); the tensors are the LoRA-merged weights of each branch ``i`` under ``branches.{i}.``, in DINO's
ViT names: ``cls_token``, ``pos_embed``, ``patch_embed.proj.{weight,bias}``, ``ln_pre.{weight,bias}`` (CLIP branches;
DreamSim's converted CLIP checkpoints call it ``pos_drop``), ``blocks.{j}.norm1|attn.qkv|attn.proj|norm2|mlp.fc1|
mlp.fc2.{weight,bias}``, ``norm.{weight,bias}`` and, for CLIP branches, ``proj`` ``(768, 512)``.
:func:`convert_dreamsim_checkpoint` builds it from the unzipped files DreamSim distributes (the folder is accepted
directly too): ``<branch>_pretrain.pth.tar`` (CLIP branches), the DINO backbone ``checkpoints/
dino_vitbase16_pretrain.pth`` (torch.hub's download) or ``dino_vitb16_pretrain.pth`` (its ``teacher``), and the
PEFT LoRA folder ``ensemble_lora/`` or ``<branch>_single_lora/`` (``adapter_config.json`` + ``adapter_model.bin`` or
``.safetensors``), merged as ``W <- W + (lora_alpha / r) * B @ A``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dynamicrafter.errors import CheckpointError, ConfigError
from dynamicrafter.fingerprint import cache_fingerprint
from dynamicrafter.media import atomic_path

DREAMSIM_IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_EMBED_DIM = 512
FILE_FORMAT = "dynamicrafter.dreamsim/1"
QUICK_GELU_SCALE = 1.702  # OpenAI CLIP's sigmoid approximation of GELU
FRAME_BATCH = 16  # frames embedded per forward pass


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ViTConfig:
    """A DINO-layout Vision Transformer (ViT-B by default)."""

    patch_size: int = 16
    image_size: int = DREAMSIM_IMAGE_SIZE
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    ln_eps: float = 1e-6
    activation: str = "gelu"  # "gelu" (DINO, OpenCLIP) or "quick_gelu" (OpenAI CLIP)
    ln_pre: bool = False  # CLIP's LayerNorm after the position embedding
    proj_dim: int | None = None  # CLIP image projection width; None for DINO


@dataclass(frozen=True)
class BranchConfig:
    """One DreamSim backbone: its ViT, which feature it contributes, and its input normalisation."""

    name: str
    vit: ViTConfig
    feature: str  # "cls" (DINO: last block's CLS, no final norm) or "embedding" (CLIP: ln_post(CLS) @ proj)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _dino(patch: int) -> BranchConfig:
    return BranchConfig(f"dino_vitb{patch}", ViTConfig(patch_size=patch), "cls", IMAGENET_MEAN, IMAGENET_STD)


def _clip(name: str, patch: int, activation: str) -> BranchConfig:
    vit = ViTConfig(patch_size=patch, ln_eps=1e-5, activation=activation, ln_pre=True, proj_dim=CLIP_EMBED_DIM)
    return BranchConfig(name, vit, "embedding", CLIP_MEAN, CLIP_STD)


BRANCHES: dict[str, BranchConfig] = {
    "dino_vitb16": _dino(16),
    "clip_vitb16": _clip("clip_vitb16", 16, "quick_gelu"),
    "clip_vitb32": _clip("clip_vitb32", 32, "quick_gelu"),
    "open_clip_vitb16": _clip("open_clip_vitb16", 16, "gelu"),
    "open_clip_vitb32": _clip("open_clip_vitb32", 32, "gelu"),
}
DREAMSIM_TYPES: dict[str, tuple[str, ...]] = {
    "ensemble": ("dino_vitb16", "clip_vitb16", "open_clip_vitb16"),
    "dino_vitb16": ("dino_vitb16",),
    "clip_vitb32": ("clip_vitb32",),
    "open_clip_vitb32": ("open_clip_vitb32",),
}


@dataclass(frozen=True)
class DreamSimConfig:
    """A DreamSim model: its type name, branches and whether embeddings are centred + normalised."""

    dreamsim_type: str = "ensemble"
    branches: tuple[BranchConfig, ...] = tuple(BRANCHES[b] for b in DREAMSIM_TYPES["ensemble"])
    normalize_embeds: bool = True


def dreamsim_config(dreamsim_type: str = "ensemble") -> DreamSimConfig:
    if dreamsim_type not in DREAMSIM_TYPES:
        raise ConfigError(f"unknown DreamSim type '{dreamsim_type}': use one of {', '.join(DREAMSIM_TYPES)}")
    return DreamSimConfig(dreamsim_type, tuple(BRANCHES[b] for b in DREAMSIM_TYPES[dreamsim_type]))


def standin_dreamsim_config(dreamsim_type: str = "ensemble", embed_dim: int = 64, depth: int = 2,
                            num_heads: int = 4) -> DreamSimConfig:
    """The DreamSim architecture at reduced width/depth, for tests with random weights (not a real metric)."""
    base = dreamsim_config(dreamsim_type)
    branches = tuple(replace(b, vit=replace(b.vit, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                            proj_dim=embed_dim // 2 if b.vit.proj_dim else None))
                     for b in base.branches)
    return replace(base, branches=branches)


# ----------------------------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------------------------

class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(QUICK_GELU_SCALE * x)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (DINO/timm layout)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # (b, n, 3 d) -> 3 x (b, heads, n, d / heads); softmax(q k^T / sqrt(d / heads)) v
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = QuickGELU() if activation == "quick_gelu" else nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=config.ln_eps)
        self.attn = Attention(dim, config.num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=config.ln_eps)
        self.mlp = MLP(dim, int(dim * config.mlp_ratio), config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (b, 3, h, w) -> (b, h w / p^2, d)


class VisionTransformer(nn.Module):
    """ViT in DINO's parameter layout; ``forward`` returns the tokens after the last block ``(b, 1 + n, d)``."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        num_patches = (config.image_size // config.patch_size) ** 2
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, config.embed_dim) * 0.02)
        self.ln_pre = nn.LayerNorm(config.embed_dim, eps=config.ln_eps) if config.ln_pre else None
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.ln_eps)
        self.proj = nn.Parameter(torch.randn(config.embed_dim, config.proj_dim) * config.embed_dim ** -0.5) \
            if config.proj_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            raise ValueError(f"DreamSim backbones take {size}x{size} input, got {tuple(x.shape[-2:])}")
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        if self.ln_pre is not None:
            tokens = self.ln_pre(tokens)
        for block in self.blocks:
            tokens = block(tokens)
        return tokens


class DreamSim(nn.Module):
    """DreamSim embedding and distance. Images ``(b, 3, 224, 224)`` in [0, 1] -> embeddings ``(b, D)``."""

    def __init__(self, config: DreamSimConfig = DreamSimConfig()):
        super().__init__()
        self.config = config
        self.branches = nn.ModuleList([VisionTransformer(b.vit) for b in config.branches])
        for i, branch in enumerate(config.branches):
            self.register_buffer(f"mean_{i}", torch.tensor(branch.mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"std_{i}", torch.tensor(branch.std).view(1, 3, 1, 1), persistent=False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        features = []
        for i, (spec, vit) in enumerate(zip(self.config.branches, self.branches)):
            x = (images - getattr(self, f"mean_{i}")) / getattr(self, f"std_{i}")
            tokens = vit(x)
            if spec.feature == "cls":
                features.append(tokens[:, 0])  # last block's CLS token, before the final LayerNorm
            else:
                features.append(vit.norm(tokens[:, 0]) @ vit.proj)  # CLIP image embedding
        embedding = torch.cat(features, dim=-1)
        if self.config.normalize_embeds:
            # centre each embedding over its dimensions, then scale to unit length
            embedding = embedding - embedding.mean(dim=-1, keepdim=True)
            embedding = embedding / embedding.norm(dim=-1, keepdim=True)
        return embedding

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``D(a, b) = 1 - cos(e(a), e(b))`` per image pair, shape ``(b,)``."""
        return 1.0 - F.cosine_similarity(self.embed(a), self.embed(b), dim=-1)


def dreamsim_preprocess(images: np.ndarray, size: int = DREAMSIM_IMAGE_SIZE) -> torch.Tensor:
    """uint8 images ``(n, h, w, 3)`` -> ``(n, 3, size, size)`` in [0, 1], bicubic (PIL), as DreamSim's transform."""
    resized = [np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in images]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 255.0


class DreamSimDistance:
    """PIC's distance ``D``: DreamSim between a reference image and each frame of a video."""

    def __init__(self, model: DreamSim, device: str | torch.device = "cpu", fingerprint: str = "random",
                 source: str = "random weights"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.label = f"DreamSim ({model.config.dreamsim_type}, {source})"
        self.signature = f"dreamsim-{model.config.dreamsim_type}-{fingerprint}"
        self.standin = False

    @torch.no_grad()
    def _embed(self, images: np.ndarray) -> torch.Tensor:
        chunks = [self.model.embed(dreamsim_preprocess(images[i:i + FRAME_BATCH]).to(self.device))
                  for i in range(0, len(images), FRAME_BATCH)]
        return torch.cat(chunks)

    def __call__(self, reference: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """Distances ``(t,)`` between ``reference (h, w, 3)`` and every frame of ``frames (t, h, w, 3)``."""
        ref = self._embed(reference[None])
        emb = self._embed(frames)
        return (1.0 - F.cosine_similarity(emb, ref.expand_as(emb), dim=-1)).double().cpu().numpy()


# ----------------------------------------------------------------------------------------------------------------
# Weight files
# ----------------------------------------------------------------------------------------------------------------

def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read '{path}' as a tensor file ({e.__class__.__name__}); pass the files "
                              f"of an unzipped DreamSim checkpoint") from e


def _dino_backbone(folder: Path) -> dict[str, torch.Tensor]:
    """DINO ViT-B/16 weights: torch.hub's ``dino_vitbase16_pretrain.pth`` or the ``teacher`` of the full file."""
    for candidate in (folder / "checkpoints" / "dino_vitbase16_pretrain.pth", folder / "dino_vitbase16_pretrain.pth"):
        if candidate.is_file():
            return _torch_load(candidate)
    full = folder / "dino_vitb16_pretrain.pth"
    state = _torch_load(full) if full.is_file() else {}
    if isinstance(state.get("teacher"), dict):
        teacher = {re.sub(r"^(module\.)?(backbone\.)?", "", k): v for k, v in state["teacher"].items()}
        return {k: v for k, v in teacher.items() if not k.startswith("head.")}
    raise CheckpointError(f"'{folder}' holds no DINO ViT-B/16 backbone: put torch.hub's dino_vitbase16_pretrain.pth "
                          f"(the file DreamSim's first run downloads) into '{folder / 'checkpoints'}'")


def _clip_backbone(folder: Path, branch: str) -> dict[str, torch.Tensor]:
    path = folder / f"{branch}_pretrain.pth.tar"
    if not path.is_file():
        raise CheckpointError(f"'{folder}' lacks {path.name} (part of the unzipped DreamSim checkpoint)")
    state = dict(_torch_load(path)["state_dict"])
    return {re.sub(r"^pos_drop\.", "ln_pre.", k): v for k, v in state.items()}


def _lora_folder(folder: Path, dreamsim_type: str) -> Path:
    tag = "ensemble" if dreamsim_type == "ensemble" else f"{dreamsim_type}_single"
    return folder / f"{tag}_lora"


def detect_dreamsim_type(folder: Path) -> str:
    """The DreamSim type of an unzipped checkpoint folder, from its LoRA sub-folder (ensemble first)."""
    for dreamsim_type in DREAMSIM_TYPES:
        if _lora_folder(folder, dreamsim_type).is_dir():
            return dreamsim_type
    raise CheckpointError(f"'{folder}' is not an unzipped DreamSim checkpoint: no ensemble_lora/ or "
                          f"<model>_single_lora/ folder in it")


def _merge_lora(state: dict[str, torch.Tensor], lora_dir: Path) -> int:
    """Fold PEFT LoRA deltas into ``state`` in place: ``W <- W + s * B @ A``; returns the number merged."""
    config_path = lora_dir / "adapter_config.json"
    if not config_path.is_file():
        raise CheckpointError(f"'{lora_dir}' lacks adapter_config.json (the DreamSim LoRA folder)")
    config = json.loads(config_path.read_text())
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / rank ** 0.5 if config.get("use_rslora") else alpha / rank
    weights_path = next((p for p in (lora_dir / "adapter_model.safetensors", lora_dir / "adapter_model.bin")
                         if p.is_file()), None)
    if weights_path is None:
        raise CheckpointError(f"'{lora_dir}' lacks adapter_model.bin / adapter_model.safetensors")
    if weights_path.suffix == ".safetensors":
        from safetensors.torch import load_file

        adapter = load_file(str(weights_path))
    else:
        adapter = _torch_load(weights_path)
    pattern = re.compile(r"extractor_list\.(\d+)\.model\.(.+?)(?:\.lora_([AB])(?:\.default)?)?\.(weight|bias)$")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in adapter.items():
        match = pattern.search(key)
        if not match:
            continue
        branch, module, ab, kind = match.groups()
        target = f"branches.{branch}.{module}.{kind}"
        if target not in state:
            raise CheckpointError(f"LoRA tensor '{key}' in '{weights_path}' has no matching base weight '{target}'")
        if ab is None:  # a trained bias saved with the adapter (PEFT bias="all"/"lora_only")
            state[target] = value.float()
        else:
            pairs.setdefault(target, {})[ab] = value.float()
    for target, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"'{weights_path}': LoRA pair for '{target}' is incomplete")
        # lora_A: (r, in), lora_B: (out, r); the update to W (out, in) is scale * B @ A
        state[target] = state[target].float() + scale * (ab["B"] @ ab["A"])
    return len(pairs)


def convert_dreamsim_checkpoint(folder: str | Path, dreamsim_type: str | None = None,
                                config: DreamSimConfig | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """LoRA-merged state dict (this module's layout) from an unzipped DreamSim checkpoint folder.

    ``config`` overrides the architecture (tests use :func:`standin_dreamsim_config`); by default it is the real
    DreamSim of ``dreamsim_type``.
    """
    folder = Path(folder)
    dreamsim_type = dreamsim_type or (config.dreamsim_type if config else detect_dreamsim_type(folder))
    config = config or dreamsim_config(dreamsim_type)
    state: dict[str, torch.Tensor] = {}
    for i, branch in enumerate(config.branches):
        weights = _dino_backbone(folder) if branch.feature == "cls" else _clip_backbone(folder, branch.name)
        state.update({f"branches.{i}.{k}": v.float() for k, v in weights.items()})
    merged = _merge_lora(state, _lora_folder(folder, dreamsim_type))
    if merged == 0:
        raise CheckpointError(f"no LoRA weights found in '{_lora_folder(folder, dreamsim_type)}'")
    _check_state(DreamSim(config), state, str(folder))
    return state, dreamsim_type


def save_dreamsim(state: dict[str, torch.Tensor], dreamsim_type: str, path: str | Path) -> Path:
    """Write the single-file format (safetensors + metadata) atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                  metadata={"format": FILE_FORMAT, "dreamsim_type": dreamsim_type})
    return path


def _check_state(model: DreamSim, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        example = f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'"
        raise CheckpointError(f"{source} does not match DreamSim {model.config.dreamsim_type}: "
                              f"{len(missing)} missing, {len(unexpected)} unexpected tensors ({example})")
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{source}: '{key}' has shape {tuple(state[key].shape)}, expected "
                                  f"{tuple(value.shape)}")


def load_dreamsim(path: str | Path, dreamsim_type: str | None = None, config: DreamSimConfig | None = None
                  ) -> DreamSim:
    """Load DreamSim from the single-file format or an unzipped DreamSim checkpoint folder.

    ``config`` overrides the architecture (tests); by default it follows the file's ``dreamsim_type``.
    """
    path = Path(path)
    if path.is_dir():
        state, dreamsim_type = convert_dreamsim_checkpoint(path, dreamsim_type, config)
    else:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            raise CheckpointError(f"'{path}' is not a DreamSim file made by 'dynamicrafter convert-dreamsim' "
                                  f"({e.__class__.__name__}); convert the unzipped DreamSim checkpoint first") from e
        if metadata.get("format") != FILE_FORMAT:
            raise CheckpointError(f"'{path}' lacks the '{FILE_FORMAT}' metadata; make it with "
                                  f"'dynamicrafter convert-dreamsim'")
        dreamsim_type = metadata.get("dreamsim_type", "ensemble")
    model = DreamSim(config or dreamsim_config(dreamsim_type))
    _check_state(model, state, f"'{path}'")
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def dreamsim_distance_from_file(path: str | Path, device: str | torch.device = "cpu",
                                dreamsim_type: str | None = None) -> DreamSimDistance:
    model = load_dreamsim(path, dreamsim_type)
    return DreamSimDistance(model, device, fingerprint=cache_fingerprint(path), source=Path(path).name)


def pic_from_distances(distances: Sequence[float] | np.ndarray) -> float:
    """PIC = (1/L) sum_l (1 - D(I, x_l)) over the L frames."""
    d = np.asarray(distances, dtype=np.float64)
    return float(np.mean(1.0 - d))
