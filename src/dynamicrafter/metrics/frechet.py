"""Frechet distance between Gaussians fitted to feature sets (FVD when the features are I3D logits).

For feature sets with means ``mu1, mu2`` and covariances ``S1, S2`` (Unterthiner et al. 2019, after FID)::

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})

``S1 S2`` is not symmetric, and a general matrix square root (``scipy.linalg.sqrtm``) of it can return complex
values with spurious imaginary parts. Here the trace is taken through a symmetric product instead: ``S1 S2`` is
similar to ``A = S1^{1/2} S2 S1^{1/2}`` (conjugate by ``S1^{1/2}``), ``A`` is symmetric positive semi-definite, so::

    tr((S1 S2)^{1/2}) = sum_i sqrt(lambda_i(A)),   lambda_i(A) >= 0

computed with two symmetric eigen-decompositions (the route of TF-GAN's ``trace_sqrt_product``), in float64, with no
complex numbers. Covariances that are singular or ill-conditioned (fewer samples than dimensions, duplicated
features) trigger a ``warnings.warn`` and, as the reference FID code does, ``eps * I`` is added to both
covariances (here in all terms, so that the distance of a set to itself stays 0).
"""

from __future__ import annotations

import warnings

import numpy as np

DEFAULT_EPS = 1e-6
# eigenvalue ratio (min / max) below which a covariance counts as singular or ill-conditioned
ILL_CONDITIONED_RATIO = 1e-12


def feature_statistics(features: np.ndarray, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and covariance ``(d, d)`` of features ``(n, d)``, in float64.

    ``ddof=1`` is the unbiased covariance (TF-GAN, VideoGPT/TATS, ``np.cov``); StyleGAN-V divides by ``n``
    (``ddof=0``). The two differ by a factor ``n / (n - 1)``, negligible for the 2048 samples of the protocol.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (n, d), got shape {x.shape}")
    n = x.shape[0]
    if n - ddof <= 0:
        raise ValueError(f"need more than {ddof} samples for a covariance, got {n}")
    mu = x.mean(axis=0)
    centered = x - mu
    sigma = centered.T @ centered / (n - ddof)
    return mu, sigma


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via eigh (negative round-off eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh(matrix)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((S1 S2)^{1/2})`` = sum of square roots of the eigenvalues of ``S1^{1/2} S2 S1^{1/2}``."""
    root1 = _sqrt_psd(sigma1)
    a = root1 @ sigma2 @ root1
    a = (a + a.T) / 2.0  # symmetric up to round-off; symmetrize so eigvalsh sees an exactly symmetric matrix
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(a), 0.0, None)).sum())


def _is_ill_conditioned(sigma: np.ndarray) -> bool:
    w = np.linalg.eigvalsh(sigma)
    top = float(np.abs(w).max(initial=0.0))
    return top == 0.0 or float(w.min()) <= ILL_CONDITIONED_RATIO * top


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = DEFAULT_EPS) -> float:
    """Squared Frechet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (see the module docstring)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                         f"{sigma2.shape}")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2.0, (sigma2 + sigma2.T) / 2.0
    diff = mu1 - mu2

    singular = [name for name, s in (("first", sigma1), ("second", sigma2)) if _is_ill_conditioned(s)]
    if singular:
        warnings.warn(
            f"Frechet distance: the covariance of the {' and '.join(singular)} feature set is singular or "
            f"ill-conditioned (usually fewer samples than the {mu1.size} feature dimensions); adding eps={eps:g} to "
            f"the diagonals as the reference FID code does. Use more samples for a reliable value.",
            RuntimeWarning, stacklevel=2)
        # regularise both covariances in every term, so that d(x, x) stays exactly 0 (pytorch-fid offsets only the
        # square-root term, which shifts the value by -2 d eps: -8e-4 for FVD's 400 dimensions)
        offset = eps * np.eye(mu1.size)
        sigma1, sigma2 = sigma1 + offset, sigma2 + offset

    # d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(value)


def frechet_distance_from_features(features1: np.ndarray, features2: np.ndarray, ddof: int = 1,
                                   eps: float = DEFAULT_EPS) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``(n1, d)`` and ``(n2, d)`` (FVD for I3D)."""
    mu1, sigma1 = feature_statistics(features1, ddof)
    mu2, sigma2 = feature_statistics(features2, ddof)
    return frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps)
