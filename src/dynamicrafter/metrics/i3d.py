"""I3D (Inception-v1 inflated to 3D, trained on Kinetics-400) as the FVD feature extractor.

Two community weight files are supported, both loaded from a local path (nothing is downloaded):

* ``i3d_pretrained_400.pt`` (VideoGPT / TATS / content-debiased-fvd): a state dict in the layout of piergiaj's
  ``pytorch-i3d`` (``Conv3d_1a_7x7.conv3d.weight``, ``Conv3d_1a_7x7.bn.running_mean``, ``Mixed_3b.b0.conv3d.weight``,
  ... ``Mixed_5c.b3b.bn.bias``, ``logits.conv3d.weight`` ``(400, 1024, 1, 1, 1)``, ``logits.conv3d.bias``). It is
  loaded into :class:`InceptionI3D`, this module's own implementation of that network with the same parameter names.
* ``i3d_torchscript.pt`` (StyleGAN-V, "perfectly reproduced" port of the tf.hub ``i3d-kinetics-400/1`` module used by
  the original TensorFlow FVD): a TorchScript archive, loaded with ``torch.jit.load`` (this deserialises TorchScript
  code and tensors; it runs no arbitrary pickled Python) and called as StyleGAN-V does,
  ``detector(x, rescale=..., resize=..., return_features=True)``.

The FVD feature in every lineage is the 400-d Kinetics *logits* before the softmax, averaged over the remaining time
steps (TF FVD: tensor ``RGB/inception_i3d/Mean:0``; StyleGAN-V: ``return_features=True``; VideoGPT/TATS:
``InceptionI3d.forward``), not the 1024-d pooled features.

Preprocessing presets (``(b, c, t, h, w)``, 16 frames in all lineages):

==============  =========================================================================  ===========  ===========
preset          spatial                                                                    value range  weight file
==============  =========================================================================  ===========  ===========
``tats``        bilinear resize shorter side to 224 (other side ceil), center crop 224     [-1, 1]      state dict
``videogpt``    as ``tats``                                                                [-0.5, 0.5]  state dict
``tf-fvd``      bilinear resize of every frame to 224x224 (aspect not kept)                [-1, 1]      either
``stylegan-v``  uint8 [0, 255] in; the TorchScript's ``rescale=True, resize=True``         [-1, 1]      torchscript
==============  =========================================================================  ===========  ===========

(``tf-fvd`` is Google's reference and content-debiased-fvd; TF1's ``resize_bilinear`` samples without the half-pixel
offset, PyTorch's ``align_corners=False`` with it, so it matches content-debiased-fvd exactly and TF closely.)
With the state-dict network, ``stylegan-v`` is computed as ``x / 255 * 2 - 1`` followed by a bilinear resize to
224x224 (the TorchScript's flags, per its author); with the TorchScript file the other presets preprocess in Python
and call it with ``rescale=False, resize=False`` on [-1, 1] input (common_metrics_on_video_quality's convention).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dynamicrafter.errors import CheckpointError, ConfigError
from dynamicrafter.fingerprint import cache_fingerprint

I3D_NUM_CLASSES = 400
I3D_INPUT_SIZE = 224
I3D_FEATURE_DIM = I3D_NUM_CLASSES
FVD_NUM_FRAMES = 16
BN_EPS = 1e-5  # pytorch-i3d's BatchNorm3d (the TF original uses 1e-3; the converted weights were made for 1e-5)
BN_MOMENTUM = 0.001
LOGITS_POOL = (2, 7, 7)  # average pool before the logits, stride 1, 'VALID'
STATE_DICT_FILE = "i3d_pretrained_400.pt"
TORCHSCRIPT_FILE = "i3d_torchscript.pt"

# Inception blocks: name -> (input channels, (b0, b1a, b1b, b2a, b2b, b3b) output channels)
INCEPTION_BLOCKS: dict[str, tuple[int, tuple[int, int, int, int, int, int]]] = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
I3D_FINAL_CHANNELS = 1024

Triple = tuple[int, int, int]


def _same_padding(x: torch.Tensor, kernel: Triple, stride: Triple) -> torch.Tensor:
    """Zero-pad ``x (b, c, t, h, w)`` as TensorFlow's 'SAME' does (extra padding at the end)."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class SamePadMaxPool3d(nn.Module):
    """Max pooling with TF 'SAME' zero padding (inputs are post-ReLU, so zeros never win over real values)."""

    def __init__(self, kernel: Triple, stride: Triple):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_same_padding(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d with TF 'SAME' padding, then BatchNorm3d and ReLU (parameter names ``conv3d.*``, ``bn.*``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1),
                 batch_norm: bool = True, activation: bool = True, bias: bool = False, bn_eps: float = BN_EPS):
        super().__init__()
        self.kernel, self.stride, self.activation = kernel, stride, activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps, momentum=BN_MOMENTUM) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_padding(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | maxpool -> 1x1."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int], bn_eps: float = BN_EPS):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(in_channels, w0, bn_eps=bn_eps)
        self.b1a = Unit3D(in_channels, w1a, bn_eps=bn_eps)
        self.b1b = Unit3D(w1a, w1b, kernel=(3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(in_channels, w2a, bn_eps=bn_eps)
        self.b2b = Unit3D(w2a, w2b, kernel=(3, 3, 3), bn_eps=bn_eps)
        self.b3a = SamePadMaxPool3d((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, w3b, bn_eps=bn_eps)
        self.out_channels = w0 + w1b + w2b + w3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


@dataclass(frozen=True)
class I3DConfig:
    """Architecture of :class:`InceptionI3D` (Carreira & Zisserman 2017, RGB stream)."""

    num_classes: int = I3D_NUM_CLASSES
    in_channels: int = 3
    bn_eps: float = BN_EPS


class InceptionI3D(nn.Module):
    """Inception-v1 I3D returning the time-averaged class logits.

    Input ``(b, 3, t, h, w)`` (standard: t = 16, h = w = 224, values per the preprocessing preset), output logits
    ``(b, num_classes)``. At 224x224 and 16 frames the last feature map is ``(b, 1024, 2, 7, 7)``; the average pool
    ``(2, 7, 7)`` reduces it to one position, the 1x1x1 ``logits`` convolution maps it to the classes, and the result
    is averaged over the remaining time/space positions (pytorch-i3d's ``logits.squeeze().mean(2)``). For smaller
    test inputs the pool window is clipped to the feature map (a no-op at the standard size).
    """

    def __init__(self, config: I3DConfig = I3DConfig()):
        super().__init__()
        self.config = config
        eps = config.bn_eps
        self.Conv3d_1a_7x7 = Unit3D(config.in_channels, 64, kernel=(7, 7, 7), stride=(2, 2, 2), bn_eps=eps)
        self.MaxPool3d_2a_3x3 = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3), bn_eps=eps)
        self.MaxPool3d_3a_3x3 = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionBlock(*INCEPTION_BLOCKS["Mixed_3b"], bn_eps=eps)
        self.Mixed_3c = InceptionBlock(*INCEPTION_BLOCKS["Mixed_3c"], bn_eps=eps)
        self.MaxPool3d_4a_3x3 = SamePadMaxPool3d((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionBlock(*INCEPTION_BLOCKS["Mixed_4b"], bn_eps=eps)
        self.Mixed_4c = InceptionBlock(*INCEPTION_BLOCKS["Mixed_4c"], bn_eps=eps)
        self.Mixed_4d = InceptionBlock(*INCEPTION_BLOCKS["Mixed_4d"], bn_eps=eps)
        self.Mixed_4e = InceptionBlock(*INCEPTION_BLOCKS["Mixed_4e"], bn_eps=eps)
        self.Mixed_4f = InceptionBlock(*INCEPTION_BLOCKS["Mixed_4f"], bn_eps=eps)
        self.MaxPool3d_5a_2x2 = SamePadMaxPool3d((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionBlock(*INCEPTION_BLOCKS["Mixed_5b"], bn_eps=eps)
        self.Mixed_5c = InceptionBlock(*INCEPTION_BLOCKS["Mixed_5c"], bn_eps=eps)
        self.logits = Unit3D(I3D_FINAL_CHANNELS, config.num_classes, batch_norm=False, activation=False, bias=True)
        self.trunk = [self.Conv3d_1a_7x7, self.MaxPool3d_2a_3x3, self.Conv3d_2b_1x1, self.Conv3d_2c_3x3,
                      self.MaxPool3d_3a_3x3, self.Mixed_3b, self.Mixed_3c, self.MaxPool3d_4a_3x3, self.Mixed_4b,
                      self.Mixed_4c, self.Mixed_4d, self.Mixed_4e, self.Mixed_4f, self.MaxPool3d_5a_2x2,
                      self.Mixed_5b, self.Mixed_5c]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.trunk:
            x = layer(x)
        pool = tuple(min(k, s) for k, s in zip(LOGITS_POOL, x.shape[2:]))
        x = F.avg_pool3d(x, pool, stride=1)  # dropout before the logits is the identity at evaluation
        return self.logits(x).mean(dim=(2, 3, 4))


# ----------------------------------------------------------------------------------------------------------------
# Weight files
# ----------------------------------------------------------------------------------------------------------------

def is_torchscript_archive(path: str | Path) -> bool:
    """TorchScript archives are zip files holding ``<name>/code/`` and ``<name>/constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "i3d"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
    for prefix in ("module.", "i3d."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_i3d_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an ``i3d_pretrained_400.pt``-style state dict (``.pt``/``.pth`` via ``weights_only`` or safetensors)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"'{path}' is not a readable I3D weight file ({e.__class__.__name__}); pass "
                              f"{STATE_DICT_FILE} (VideoGPT/TATS) or {TORCHSCRIPT_FILE} (StyleGAN-V)") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}' holds a {type(state).__name__}, not an I3D state dict; pass "
                              f"{STATE_DICT_FILE} (VideoGPT/TATS) or {TORCHSCRIPT_FILE} (StyleGAN-V)")
    return _strip_prefixes(state)


def load_inception_i3d(state: dict[str, torch.Tensor], source: str = "state dict") -> InceptionI3D:
    """Build :class:`InceptionI3D` from a pytorch-i3d-layout state dict (``num_batches_tracked`` optional)."""
    num_classes = state["logits.conv3d.weight"].shape[0] if "logits.conv3d.weight" in state else I3D_NUM_CLASSES
    model = InceptionI3D(I3DConfig(num_classes=num_classes))
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    given = {k for k in state if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        detail = f"{len(missing)} missing (e.g. '{missing[0]}')" if missing else ""
        if unexpected:
            detail += (", " if detail else "") + f"{len(unexpected)} unexpected (e.g. '{unexpected[0]}')"
        raise CheckpointError(f"{source} is not an I3D state dict in the pytorch-i3d layout of {STATE_DICT_FILE}: "
                              f"{detail} keys")
    own = model.state_dict()
    for key in expected:
        if tuple(state[key].shape) != tuple(own[key].shape):
            raise CheckpointError(f"{source}: tensor '{key}' has shape {tuple(state[key].shape)}, expected "
                                  f"{tuple(own[key].shape)} (pass the Kinetics-400 RGB I3D, {STATE_DICT_FILE})")
    model.load_state_dict({k: state[k] for k in expected}, strict=False)
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing and feature extraction
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class I3DPreprocess:
    """How a lineage turns uint8 frames into I3D input (see the table in the module docstring)."""

    name: str
    resize: str  # "short_side_center_crop" or "squash"
    value_range: tuple[float, float]
    size: int = I3D_INPUT_SIZE


I3D_PRESETS: dict[str, I3DPreprocess] = {
    "tats": I3DPreprocess("tats", "short_side_center_crop", (-1.0, 1.0)),
    "videogpt": I3DPreprocess("videogpt", "short_side_center_crop", (-0.5, 0.5)),
    "tf-fvd": I3DPreprocess("tf-fvd", "squash", (-1.0, 1.0)),
    "stylegan-v": I3DPreprocess("stylegan-v", "squash", (-1.0, 1.0)),
}
# the lineage each file format comes from, used for preset "auto"
DEFAULT_PRESET = {"state_dict": "tats", "torchscript": "stylegan-v"}


def preprocess_clip(frames: np.ndarray, preset: I3DPreprocess) -> torch.Tensor:
    """uint8 frames ``(t, h, w, 3)`` -> float32 I3D input ``(3, t, size, size)`` per ``preset``."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (t, h, w, 3), got {frames.dtype} {frames.shape}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # t c h w in [0, 1]
    size = preset.size
    h, w = x.shape[-2:]
    if preset.resize == "short_side_center_crop":
        scale = size / min(h, w)
        target = (size, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), size)
        x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[..., top:top + size, left:left + size]
    elif preset.resize == "squash":
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    else:
        raise ValueError(f"unknown resize mode {preset.resize!r}")
    low, high = preset.value_range
    x = x * (high - low) + low
    return x.permute(1, 0, 2, 3).contiguous()


@dataclass(frozen=True)
class FVDConfig:
    """Feature extraction for FVD/KVD: preset (``auto`` = the weight file's own lineage), clip length, batching."""

    preset: str = "auto"
    num_frames: int = FVD_NUM_FRAMES
    batch_size: int = 8
    device: str = "auto"
    input_size: int = I3D_INPUT_SIZE  # 224 in every lineage; smaller only for tests and benchmarks


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class I3DFeatureExtractor:
    """Maps a list of uint8 clips ``(t, h, w, 3)`` to I3D logits ``(n, 400)`` (float64 numpy).

    Build it with :meth:`from_file` (a weight file) or directly around a network (tests, benchmarks). ``signature``
    identifies the network, its weights and preprocessing: the feature cache keys on it.
    """

    def __init__(self, network: nn.Module, kind: str, config: FVDConfig = FVDConfig(), fingerprint: str = "random",
                 source: str = "random weights"):
        if kind not in DEFAULT_PRESET:
            raise ValueError(f"kind must be 'state_dict' or 'torchscript', got {kind!r}")
        preset_name = DEFAULT_PRESET[kind] if config.preset == "auto" else config.preset
        if preset_name not in I3D_PRESETS:
            raise ConfigError(f"unknown FVD preprocessing preset '{preset_name}': use one of "
                              f"{', '.join(I3D_PRESETS)} or auto")
        self.config, self.kind, self.source = config, kind, source
        self.preset = replace(I3D_PRESETS[preset_name], size=config.input_size)
        self.device = _resolve_device(config.device)
        self.network = network.to(self.device).eval()
        size = "" if config.input_size == I3D_INPUT_SIZE else f"-s{config.input_size}"
        self.signature = f"i3d-{kind}-{fingerprint}-{preset_name}-f{config.num_frames}{size}"

    @classmethod
    def from_file(cls, path: str | Path, config: FVDConfig = FVDConfig()) -> I3DFeatureExtractor:
        """Load ``i3d_pretrained_400.pt`` (state dict) or ``i3d_torchscript.pt`` (TorchScript) from ``path``."""
        path = Path(path)
        if is_torchscript_archive(path):
            try:
                network = torch.jit.load(str(path), map_location="cpu")
            except Exception as e:
                raise CheckpointError(f"'{path}' is a TorchScript archive that torch.jit.load cannot read "
                                      f"({e.__class__.__name__}); pass StyleGAN-V's {TORCHSCRIPT_FILE}") from e
            kind = "torchscript"
        else:
            network = load_inception_i3d(load_i3d_state_dict(path), source=f"'{path}'")
            kind = "state_dict"
        return cls(network, kind, config, fingerprint=cache_fingerprint(path), source=path.name)

    @property
    def description(self) -> str:
        return f"I3D ({self.source}, {self.kind}), preset {self.preset.name}, {self.config.num_frames} frames"

    @torch.no_grad()
    def __call__(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        if not clips:
            return np.zeros((0, I3D_FEATURE_DIM))
        if self.kind == "torchscript" and self.preset.name == "stylegan-v":
            outputs = []
            for group in _group_by_shape(clips):
                # StyleGAN-V feeds uint8 (b, c, t, h, w) in [0, 255] and lets the detector rescale and resize
                x = torch.from_numpy(np.stack([clips[i] for i in group])).permute(0, 4, 1, 2, 3).to(self.device)
                outputs.append((group, self.network(x, rescale=True, resize=True, return_features=True)))
            return _ungroup(outputs, len(clips))
        x = torch.stack([preprocess_clip(c, self.preset) for c in clips]).to(self.device)
        if self.kind == "torchscript":
            logits = self.network(x, rescale=False, resize=False, return_features=True)
        else:
            logits = self.network(x)
        return logits.double().cpu().numpy()


def _group_by_shape(clips: Sequence[np.ndarray]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, clip in enumerate(clips):
        groups.setdefault(tuple(clip.shape), []).append(i)
    return list(groups.values())


def _ungroup(outputs: list[tuple[list[int], torch.Tensor]], n: int) -> np.ndarray:
    result = np.zeros((n, outputs[0][1].shape[-1]))
    for indices, values in outputs:
        result[indices] = values.double().cpu().numpy()
    return result
