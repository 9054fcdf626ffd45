"""The sampled timesteps of every sampler (numpy only: the option checks import this without torch)."""

from __future__ import annotations

import numpy as np

from dynamicrafter.config import SPACINGS
from dynamicrafter.errors import ConfigError


def sampling_timesteps(num_steps: int, spacing: str = "uniform", num_train_timesteps: int = 1000) -> list[int]:
    """The sampled timesteps, ascending.

    ``uniform``: ``range(0, T, T // S) + 1`` (may give more than S steps when T % S != 0, as released; values
    past T - 1 are dropped);
    ``uniform_trailing``: ``round(arange(T, 0, -T / S)) - 1``, so sampling starts at t = T - 1.
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ConfigError(f"number of sampling steps must be in [1, {num_train_timesteps}], got {num_steps}")
    if spacing == "uniform":
        steps = np.arange(0, num_train_timesteps, num_train_timesteps // num_steps) + 1
        # e.g. S = 3 reaches t = 1000, past the schedule (the released code fails with an IndexError there): drop it
        steps = steps[steps < num_train_timesteps]
    elif spacing == "uniform_trailing":
        steps = np.flip(np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / num_steps))).astype(
            np.int64) - 1
    else:
        raise ConfigError(f"unknown timestep spacing '{spacing}': use one of {SPACINGS}")
    return [int(s) for s in steps]


__all__ = ["SPACINGS", "sampling_timesteps"]
