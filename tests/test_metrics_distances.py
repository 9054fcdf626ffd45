"""Frechet distance (FVD's formula) and polynomial-kernel MMD (KVD) against closed forms and known distributions."""

import warnings

import numpy as np
import pytest
import scipy.linalg

from dynamicrafter.metrics.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    trace_sqrt_product,
)
from dynamicrafter.metrics.kernel import (
    KernelConfig,
    kernel_distance,
    mmd2_biased,
    mmd2_unbiased,
    polynomial_kernel,
)


def random_spd(rng, d, cond=10.0):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.linspace(1.0, cond, d)) @ q.T


# ------------------------------------------------------------------------------------------------------------
# Frechet distance
# ------------------------------------------------------------------------------------------------------------

def test_frechet_diagonal_closed_form():
    # commuting (diagonal) covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 5.0, 16), rng.uniform(0.1, 5.0, 16)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_general_spd_closed_form():
    # S2 = c^2 S1  =>  (S1 S2)^{1/2} = c S1  =>  d^2 = |mu1 - mu2|^2 + (1 - c)^2 tr(S1)
    rng = np.random.default_rng(1)
    s1 = random_spd(rng, 32)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    c = 1.7
    expected = np.sum((mu1 - mu2) ** 2) + (1 - c) ** 2 * np.trace(s1)
    assert frechet_distance(mu1, s1, mu2, c * c * s1) == pytest.approx(expected, rel=1e-9)


def test_frechet_matches_scipy_sqrtm_on_non_commuting_covariances():
    # d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}), the reference route through scipy's general sqrtm
    rng = np.random.default_rng(2)
    s1, s2 = random_spd(rng, 24, cond=50.0), random_spd(rng, 24, cond=20.0)
    mu1, mu2 = rng.standard_normal(24), rng.standard_normal(24)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert trace_sqrt_product(s1, s2) == pytest.approx(trace_sqrt_product(s2, s1), rel=1e-9)


def test_frechet_of_a_set_with_itself_is_zero_and_sample_estimate_converges():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 8)) @ np.linalg.cholesky(random_spd(rng, 8)).T
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # well-conditioned: no warning
        assert abs(frechet_distance_from_features(x, x)) < 1e-9
    # N(0, I) vs N(m, 4 I) in d dims: d^2 = |m|^2 + d (2 - 1)^2
    m = np.full(8, 0.5)
    a = rng.standard_normal((20000, 8))
    b = 2.0 * rng.standard_normal((20000, 8)) + m
    assert frechet_distance_from_features(a, b) == pytest.approx(8 * 0.25 + 8 * 1.0, rel=0.05)


def test_frechet_warns_on_singular_covariance_and_stays_real():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((10, 50)), rng.standard_normal((10, 50)) + 0.1  # fewer samples than dimensions
    with pytest.warns(RuntimeWarning, match="singular or ill-conditioned"):
        value = frechet_distance_from_features(x, y)
    assert isinstance(value, float) and np.isfinite(value) and value > 0


def test_feature_statistics_ddof():
    x = np.random.default_rng(5).standard_normal((100, 3))
    mu, sigma = feature_statistics(x)
    assert np.allclose(mu, x.mean(0)) and np.allclose(sigma, np.cov(x, rowvar=False))
    _, sigma0 = feature_statistics(x, ddof=0)
    assert np.allclose(sigma0, sigma * 99 / 100)


# ------------------------------------------------------------------------------------------------------------
# KVD: polynomial-kernel MMD^2
# ------------------------------------------------------------------------------------------------------------

def test_polynomial_kernel_definition():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((4, 7)), rng.standard_normal((5, 7))
    expected = (x @ y.T / 7 + 1.0) ** 3  # degree 3, gamma = 1 / d, coef0 = 1
    assert np.allclose(polynomial_kernel(x, y), expected)
    assert np.allclose(polynomial_kernel(x, y, KernelConfig(degree=2, gamma=0.5, coef0=0.0)), (0.5 * x @ y.T) ** 2)


def _discrete_population_mmd2(support, p, q):
    # exact MMD^2 between two distributions on a finite support: p'Kp + q'Kq - 2 p'Kq
    k = polynomial_kernel(support, support)
    return float(p @ k @ p + q @ k @ q - 2 * p @ k @ q)


def _repeat_estimates(rng, support, p, q, m, repeats, estimator):
    values = []
    for _ in range(repeats):
        x = support[rng.choice(len(support), m, p=p)]
        y = support[rng.choice(len(support), m, p=q)]
        values.append(estimator(x, y))
    return np.asarray(values)


def test_kvd_unbiased_on_known_distributions():
    rng = np.random.default_rng(7)
    support = rng.standard_normal((6, 5)) * 2.0
    p = np.array([0.3, 0.2, 0.2, 0.1, 0.1, 0.1])
    q = np.array([0.1, 0.1, 0.2, 0.2, 0.2, 0.2])
    true = _discrete_population_mmd2(support, p, q)
    values = _repeat_estimates(rng, support, p, q, m=30, repeats=400, estimator=mmd2_unbiased)
    stderr = values.std(ddof=1) / np.sqrt(len(values))
    assert abs(values.mean() - true) < 4 * stderr, (values.mean(), true, stderr)


def test_kvd_unbiased_is_zero_mean_for_identical_distributions():
    rng = np.random.default_rng(8)
    support = rng.standard_normal((6, 5)) * 2.0
    p = np.array([0.3, 0.2, 0.2, 0.1, 0.1, 0.1])
    assert _discrete_population_mmd2(support, p, p) == pytest.approx(0.0, abs=1e-9)
    unbiased = _repeat_estimates(rng, support, p, p, m=20, repeats=400, estimator=mmd2_unbiased)
    stderr = unbiased.std(ddof=1) / np.sqrt(len(unbiased))
    assert abs(unbiased.mean()) < 4 * stderr
    assert (unbiased < 0).any(), "an unbiased estimate of 0 must be negative sometimes"
    biased = _repeat_estimates(rng, support, p, p, m=20, repeats=400, estimator=mmd2_biased)
    assert (biased >= -1e-12).all() and biased.mean() > 10 * stderr  # the V-statistic overestimates


def test_kvd_subset_form():
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((64, 12)), rng.standard_normal((64, 12)) + 0.3
    # subsets as large as the sets are permutations of them: every subset value equals the single-pass value
    full = kernel_distance(x, y, n_subsets=5, subset_size=1000)
    assert full.subset_size == 64
    assert full.mean == pytest.approx(mmd2_unbiased(x, y), rel=1e-10) and full.std < 1e-10
    small = kernel_distance(x, y, n_subsets=50, subset_size=16, seed=1)
    assert small.std > 0 and small.mean == kernel_distance(x, y, n_subsets=50, subset_size=16, seed=1).mean
    assert abs(small.mean - mmd2_unbiased(x, y)) < 4 * small.std / np.sqrt(50) + 0.05
