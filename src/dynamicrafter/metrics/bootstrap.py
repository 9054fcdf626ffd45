"""Percentile-bootstrap intervals for evaluation figures measured on a finite set of test items.

A model's accuracy on 90 held-out clips is one draw: resampling the clips (with replacement) shows how much it would
move on another draw of the same size. ``bootstrap_interval`` gives the mean of per-item values and the central
``level`` interval of the resampled means; ``paired_difference_interval`` does the same for the difference of two
models scored on the *same* items (each resample keeps the pairs together, so the clip-to-clip spread that both models
share cancels). A difference whose interval excludes 0 is one the test set resolves.

Items that belong together (the 9 videos made from one first frame) are resampled as one unit: pass their per-unit
means, e.g. the share of a first frame's videos that show the prompt's motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynamicrafter.errors import ConfigError

DEFAULT_RESAMPLES = 4000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """``estimate`` (the mean over the items) and the percentile-bootstrap interval ``[low, high]``."""

    estimate: float
    low: float
    high: float
    level: float
    items: int

    def excludes(self, value: float = 0.0) -> bool:
        """True when ``value`` lies outside the interval (e.g. a difference that is not 0)."""
        return not self.low <= value <= self.high

    def bracket(self, digits: int = 2, signed: bool = False) -> str:
        """The interval alone, ``[low, high]`` (``signed``: with a + on positive values, for differences)."""
        spec = f"{'+' if signed else ''}.{digits}f"
        return f"[{self.low:{spec}}, {self.high:{spec}}]"

    def format(self, digits: int = 2, signed: bool = False) -> str:
        """``estimate [low, high]``."""
        spec = f"{'+' if signed else ''}.{digits}f"
        return f"{self.estimate:{spec}} {self.bracket(digits, signed)}"

    def to_json(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level,
                "items": self.items}


def _check(values: np.ndarray, resamples: int, level: float) -> None:
    if values.ndim != 1 or values.size == 0:
        raise ConfigError(f"bootstrap needs a non-empty 1-D array of per-item values, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ConfigError(f"bootstrap values must be finite, got {int((~np.isfinite(values)).sum())} NaN / inf")
    if resamples < 100:
        raise ConfigError(f"bootstrap needs at least 100 resamples, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"interval level must be in (0, 1), got {level}")


def bootstrap_interval(values, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                       seed: int = 0) -> Interval:
    """The mean of ``values`` (one per test item) and its percentile-bootstrap interval."""
    x = np.asarray(values, dtype=np.float64)
    _check(x, resamples, level)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)  # (resamples,)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(float(x.mean()), float(low), float(high), level, int(x.size))


def paired_difference_interval(a, b, resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                               seed: int = 0) -> Interval:
    """mean(a) - mean(b) of two models' per-item values on the same items (``a[i]`` and ``b[i]`` of item i), with
    the bootstrap interval that resamples the items."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ConfigError(f"a paired difference needs the same items in both: shapes {x.shape} and {y.shape}")
    return bootstrap_interval(x - y, resamples, level, seed)
