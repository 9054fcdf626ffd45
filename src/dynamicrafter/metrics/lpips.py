"""LPIPS (Zhang et al. 2018, AlexNet variant v0.1): an explicitly chosen *stand-in* distance for PIC.

The paper's PIC uses DreamSim; LPIPS measures lower-level perceptual differences and gives different values, so
every output computed with it is labelled "LPIPS stand-in". Two local files are needed (nothing is downloaded):
torchvision's ImageNet AlexNet (``alexnet-owt-7be5be79.pth``: ``features.{0,3,6,8,10}.{weight,bias}``, the
classifier is ignored) and the LPIPS linear layers (``weights/v0.1/alex.pth`` of the ``lpips`` package:
``lin{0..4}.model.1.weight`` of shapes ``(1, C_k, 1, 1)``).

For images ``x0, x1`` in [-1, 1]::

    LPIPS = sum_k mean_{h,w} w_k . (f_k(x0) / |f_k(x0)| - f_k(x1) / |f_k(x1)|)^2

with ``f_k`` the ReLU outputs of AlexNet's five conv layers (after the input scaling ``(x - shift) / scale``), the
norms taken over channels at each position, ``w_k`` the learned 1x1 weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dynamicrafter.errors import CheckpointError
from dynamicrafter.fingerprint import cache_fingerprint
from dynamicrafter.metrics.dreamsim import DREAMSIM_IMAGE_SIZE, FRAME_BATCH, dreamsim_preprocess

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
ALEXNET_CHANNELS = (64, 192, 384, 256, 256)
NORM_EPS = 1e-10
STANDIN_LABEL = "LPIPS stand-in (AlexNet v0.1), not the paper's DreamSim PIC"


class LPIPS(nn.Module):
    """LPIPS-Alex. Images ``(b, 3, h, w)`` in [-1, 1] -> distances ``(b,)``."""

    def __init__(self):
        super().__init__()
        # torchvision AlexNet ``features`` indices of the five convolutions, kept so the state dict names match
        self.features = nn.ModuleDict({
            "0": nn.Conv2d(3, 64, 11, stride=4, padding=2),
            "3": nn.Conv2d(64, 192, 5, padding=2),
            "6": nn.Conv2d(192, 384, 3, padding=1),
            "8": nn.Conv2d(384, 256, 3, padding=1),
            "10": nn.Conv2d(256, 256, 3, padding=1),
        })
        self.lins = nn.ParameterList([nn.Parameter(torch.full((1, c, 1, 1), 1.0 / c)) for c in ALEXNET_CHANNELS])
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        outs = []
        h = F.relu(self.features["0"](x))
        outs.append(h)
        h = F.relu(self.features["3"](F.max_pool2d(h, 3, 2)))
        outs.append(h)
        h = F.relu(self.features["6"](F.max_pool2d(h, 3, 2)))
        outs.append(h)
        h = F.relu(self.features["8"](h))
        outs.append(h)
        outs.append(F.relu(self.features["10"](h)))
        return outs

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x0.shape[0], device=x0.device)
        for f0, f1, w in zip(self.activations(x0), self.activations(x1), self.lins):
            f0 = f0 / (f0.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)
            f1 = f1 / (f1.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)
            total = total + F.conv2d((f0 - f1) ** 2, w).mean(dim=(1, 2, 3))
        return total


def load_lpips(lins_path: str | Path, alexnet_path: str | Path) -> LPIPS:
    """Build LPIPS-Alex from the lpips ``alex.pth`` and torchvision's AlexNet state dict."""
    model = LPIPS()
    try:
        lins = torch.load(lins_path, map_location="cpu", weights_only=True)
        alex = torch.load(alexnet_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read the LPIPS weights '{lins_path}' / '{alexnet_path}' "
                              f"({e.__class__.__name__})") from e
    try:
        for k, param in enumerate(model.lins):
            param.data.copy_(lins[f"lin{k}.model.1.weight"])
        for index, conv in model.features.items():
            conv.weight.data.copy_(alex[f"features.{index}.weight"])
            conv.bias.data.copy_(alex[f"features.{index}.bias"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"'{lins_path}' must be lpips weights/v0.1/alex.pth and '{alexnet_path}' torchvision's "
                              f"alexnet-owt-7be5be79.pth ({e})") from e
    return model.eval().requires_grad_(False)


class LPIPSDistance:
    """PIC's distance replaced by LPIPS (clearly labelled stand-in); same call convention as DreamSimDistance."""

    def __init__(self, model: LPIPS, device: str | torch.device = "cpu", fingerprint: str = "random"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.label = STANDIN_LABEL
        self.signature = f"lpips-alex-{fingerprint}"
        self.standin = True

    @torch.no_grad()
    def __call__(self, reference: np.ndarray, frames: np.ndarray) -> np.ndarray:
        # same 224x224 bicubic geometry as DreamSim, then [0, 1] -> [-1, 1]
        ref = dreamsim_preprocess(reference[None], DREAMSIM_IMAGE_SIZE).to(self.device) * 2 - 1
        out = []
        for i in range(0, len(frames), FRAME_BATCH):
            x = dreamsim_preprocess(frames[i:i + FRAME_BATCH], DREAMSIM_IMAGE_SIZE).to(self.device) * 2 - 1
            out.append(self.model(ref.expand_as(x), x))
        return torch.cat(out).double().cpu().numpy()


def lpips_distance_from_files(lins_path: str | Path, alexnet_path: str | Path,
                              device: str | torch.device = "cpu") -> LPIPSDistance:
    fingerprint = cache_fingerprint(lins_path)[:6] + cache_fingerprint(alexnet_path)[:6]
    return LPIPSDistance(load_lpips(lins_path, alexnet_path), device, fingerprint)
