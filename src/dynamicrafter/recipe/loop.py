"""A small resumable optimisation loop for the recipe's pre-diffusion stages (autoencoder, CLIP towers).

State (modules, optimizer, step, RNG states) is saved atomically every ``save_every`` steps; calling :func:`run`
again with the same ``state_path`` continues where it stopped, reaching the same weights as an uninterrupted run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dynamicrafter.media import atomic_path

StepFn = Callable[[int, torch.Generator], dict[str, float]]  # (step, data generator) -> logged scalars (loss first)


def _rng_state(generator: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "data": generator.get_state()}


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["data"])


def run(name: str, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer, step_fn: StepFn, steps: int,
        state_path: Path, seed: int = 0, save_every: int = 200, scheduler=None) -> dict[str, float]:
    """Run ``step_fn`` for steps [resumed step, steps); returns the mean of the logged values over the last 50."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    start = 0
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)  # our own file, written below
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], generator)
        start = state["step"]

    def save(step: int) -> None:
        state = {"modules": {k: m.state_dict() for k, m in modules.items()}, "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict() if scheduler is not None else None, "step": step,
                 "rng": _rng_state(generator)}
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)

    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    with tqdm(total=steps, initial=start, desc=name, unit="step") as bar:
        for step in range(start, steps):
            logs = step_fn(step, generator)
            history.append(logs)
            history = history[-50:]
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            if (step + 1) % save_every == 0 or step + 1 == steps:
                save(step + 1)
    means = {k: float(np.mean([h[k] for h in history])) for k in (history[0] if history else {})}
    means["seconds"] = time.perf_counter() - t0
    return means
