"""Kernel distances between feature sets: KVD (KID's estimator applied to I3D video features).

Polynomial kernel (Binkowski et al. 2018, "Demystifying MMD GANs"), ``d`` the feature dimension::

    k(x, y) = (gamma * x.y + coef0)^degree,   degree = 3, gamma = 1 / d, coef0 = 1

Unbiased estimate of the squared maximum mean discrepancy between samples ``X = {x_i}`` (m of them) and
``Y = {y_j}`` (n of them)::

    MMD^2_u = 1/(m(m-1)) sum_{i != i'} k(x_i, x_i') + 1/(n(n-1)) sum_{j != j'} k(y_j, y_j')
              - 2/(mn) sum_{i, j} k(x_i, y_j)

Its expectation is exactly the population MMD^2, so for two samples of one distribution it scatters around 0 and
is negative about half the time; it is reported as is (no clipping). The biased V-statistic (the diagonals
included, ``1/m^2`` normalisers) is always >= 0 but overestimates. KID/KVD as usually reported is the *subset* form
of Binkowski et al.'s code: draw ``n_subsets`` subsets of ``subset_size`` samples (without replacement) from each
set, compute ``MMD^2_u`` on each, report the mean and standard deviation over subsets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

KERNEL_DEGREE = 3
KERNEL_COEF0 = 1.0
DEFAULT_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000


@dataclass(frozen=True)
class KernelConfig:
    """The polynomial kernel ``k(x, y) = (gamma x.y + coef0)^degree``; ``gamma=None`` means ``1 / d``."""

    degree: int = KERNEL_DEGREE
    gamma: float | None = None
    coef0: float = KERNEL_COEF0


@dataclass(frozen=True)
class KernelDistance:
    """Subset-form kernel distance: mean and std of ``MMD^2_u`` over ``n_subsets`` subsets of ``subset_size``."""

    mean: float
    std: float
    n_subsets: int
    subset_size: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, config: KernelConfig = KernelConfig()) -> np.ndarray:
    """Kernel matrix ``(m, n)`` between rows of ``x (m, d)`` and ``y (n, d)``, float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    gamma = 1.0 / x.shape[1] if config.gamma is None else config.gamma
    return (gamma * (x @ y.T) + config.coef0) ** config.degree


def _check(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be (m, d) and (n, d), got {x.shape} and {y.shape}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {x.shape[0]} and {y.shape[0]}")
    return x, y


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, config: KernelConfig = KernelConfig()) -> float:
    """Unbiased ``MMD^2_u`` over all samples of ``x (m, d)`` and ``y (n, d)`` (single-pass form, m != n allowed)."""
    x, y = _check(x, y)
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x, config), polynomial_kernel(y, y, config), polynomial_kernel(x, y, config)
    # the i != i' sums: everything minus the diagonal
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    term_xy = k_xy.sum() / (m * n)
    return float(term_xx + term_yy - 2.0 * term_xy)


def mmd2_biased(x: np.ndarray, y: np.ndarray, config: KernelConfig = KernelConfig()) -> float:
    """Biased V-statistic ``MMD^2_b`` (diagonals included, ``1/m^2``, ``1/n^2``, ``1/(mn)``); always >= 0."""
    x, y = _check(x, y)
    return float(polynomial_kernel(x, x, config).mean() + polynomial_kernel(y, y, config).mean()
                 - 2.0 * polynomial_kernel(x, y, config).mean())


def kernel_distance(x: np.ndarray, y: np.ndarray, n_subsets: int = DEFAULT_SUBSETS,
                    subset_size: int = DEFAULT_SUBSET_SIZE, seed: int = 0,
                    config: KernelConfig = KernelConfig()) -> KernelDistance:
    """Subset form (Binkowski et al.'s KID code): ``MMD^2_u`` on ``n_subsets`` random subsets, mean and std.

    ``subset_size`` is capped at the smaller set size; subsets are drawn without replacement, independently for each
    repetition, from a generator seeded with ``seed`` (the value is reproducible).
    """
    x, y = _check(x, y)
    size = min(subset_size, x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    values = np.empty(n_subsets, dtype=np.float64)
    for i in range(n_subsets):
        xs = x[rng.choice(x.shape[0], size, replace=False)]
        ys = y[rng.choice(y.shape[0], size, replace=False)]
        values[i] = mmd2_unbiased(xs, ys, config)
    return KernelDistance(mean=float(values.mean()), std=float(values.std()), n_subsets=n_subsets, subset_size=size)
