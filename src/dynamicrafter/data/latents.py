"""Cached VAE posteriors of generated clips, so that training does not run the autoencoder's encoder every step.

For a frozen VAE the released training step encodes the clip and samples the posterior,
``z = s (mean + exp(logvar / 2) eps)``. Storing ``mean`` and ``logvar`` once per clip and sampling ``eps`` in the
training step is the same distribution at a fraction of the cost. The cache is a folder of chunk files
(``chunk_00000.pt`` ...: float16 ``mean`` / ``logvar`` of shape (n, c, t, h, w) and the clip ids) plus
``cache.json`` (the generated data set's config, the split and a fingerprint of the VAE weights); chunks are written
atomically, so an interrupted encoding resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from dynamicrafter.data.synthetic import SyntheticConfig, SyntheticVideoDataset
from dynamicrafter.errors import UserError
from dynamicrafter.media import atomic_path
from dynamicrafter.models.vae import LOGVAR_RANGE, VideoVAE

CACHE_FILE = "cache.json"
CHUNK_CLIPS = 256


def vae_fingerprint(vae: VideoVAE) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def encode_latent_cache(vae: VideoVAE, config: SyntheticConfig, split: str, folder: str | Path,
                        batch_clips: int = 8) -> Path:
    """Encode every clip of ``split`` into ``folder`` (resumes finished chunks; refuses a cache of another VAE)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"synthetic": config.to_dict(), "split": split, "vae": vae_fingerprint(vae), "chunk_clips": CHUNK_CLIPS}
    meta_path = folder / CACHE_FILE
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != json.loads(json.dumps(meta)):
            raise UserError(f"latent cache '{folder}' was made with other data or another VAE; delete it or choose "
                            f"another folder")
    else:
        with atomic_path(meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
    dataset = SyntheticVideoDataset(config, split)
    vae = vae.eval()
    chunks = range(0, len(dataset), CHUNK_CLIPS)
    for start in tqdm(chunks, desc="encoding latents", unit="chunk"):
        path = folder / f"chunk_{start // CHUNK_CLIPS:05d}.pt"
        if path.is_file():
            continue
        means, logvars = [], []
        stop = min(start + CHUNK_CLIPS, len(dataset))
        for first in range(start, stop, batch_clips):
            frames = np.stack([dataset.clip(i).frames for i in range(first, min(first + batch_clips, stop))])
            x = torch.from_numpy(frames.transpose(0, 1, 4, 2, 3).astype(np.float32) / 127.5 - 1.0)  # (b, t, 3, H, W)
            b, t = x.shape[:2]
            moments = vae.autoencoder.quant_conv(vae.autoencoder.encoder(x.flatten(0, 1)))  # (b*t, 2c, h, w)
            mean, logvar = moments.chunk(2, dim=1)
            means.append(mean.unflatten(0, (b, t)).transpose(1, 2).half())  # (b, c, t, h, w)
            logvars.append(logvar.unflatten(0, (b, t)).transpose(1, 2).half())
        chunk = {"mean": torch.cat(means), "logvar": torch.cat(logvars),
                 "clip_ids": torch.from_numpy(dataset.clip_ids[start:stop].copy())}
        with atomic_path(path) as tmp:
            torch.save(chunk, tmp)
    return folder


class LatentClipDataset(Dataset):
    """Generated clips with their cached posteriors: the synthetic sample dict plus ``latent_mean`` and
    ``latent_logvar`` (float32 (c, t, h, w), unscaled VAE moments)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        meta_path = folder / CACHE_FILE
        if not meta_path.is_file():
            raise UserError(f"'{folder}' is not a latent cache (no {CACHE_FILE}); make one with the recipe")
        meta = json.loads(meta_path.read_text())
        synthetic = meta["synthetic"]
        for key in ("speed_range", "zoom_rate_range", "rotation_speed_range"):
            synthetic[key] = tuple(synthetic[key])
        self.config = SyntheticConfig(**synthetic)
        self.dataset = SyntheticVideoDataset(self.config, meta["split"])
        chunks = sorted(folder.glob("chunk_*.pt"))
        expected = -(-len(self.dataset) // int(meta["chunk_clips"]))
        if len(chunks) != expected:
            raise UserError(f"latent cache '{folder}' is incomplete ({len(chunks)} of {expected} chunks): run the "
                            f"encoding again to finish it")
        loaded = [torch.load(p, map_location="cpu", weights_only=True) for p in chunks]
        self.mean = torch.cat([c["mean"] for c in loaded])
        self.logvar = torch.cat([c["logvar"] for c in loaded])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        item["latent_mean"] = self.mean[index].float()
        item["latent_logvar"] = self.logvar[index].float()
        return item


def sample_posterior(mean: torch.Tensor, logvar: torch.Tensor, scale: float, generator: torch.Generator | None
                     ) -> torch.Tensor:
    """``s (mean + exp(clamp(logvar) / 2) eps)``, as the released encoder samples it."""
    from dynamicrafter.utils import randn

    noise = randn(mean.shape, generator, mean.device, mean.dtype)
    return scale * (mean + torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE)) * noise)


__all__ = ["LatentClipDataset", "encode_latent_cache", "sample_posterior", "vae_fingerprint"]
