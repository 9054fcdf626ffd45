"""Bootstrap intervals: right coverage on known cases, paired differences cancel shared spread, clear errors."""

import numpy as np
import pytest

from dynamicrafter.errors import ConfigError
from dynamicrafter.metrics.bootstrap import bootstrap_interval, paired_difference_interval


def test_interval_covers_the_true_rate_about_as_often_as_its_level():
    """200 draws of 90 Bernoulli(0.6) items: the 95% interval holds 0.6 in 88-99% of them (binomial spread of 200
    trials around 0.95 is +- 0.03) and is about as wide as the normal approximation, 2 * 1.96 * sqrt(p q / n)."""
    rng = np.random.default_rng(0)
    hits, widths = 0, []
    for seed in range(200):
        interval = bootstrap_interval(rng.random(90) < 0.6, resamples=1000, seed=seed)
        hits += interval.low <= 0.6 <= interval.high
        widths.append(interval.high - interval.low)
    assert 0.88 <= hits / 200 <= 0.99
    assert np.mean(widths) == pytest.approx(2 * 1.96 * np.sqrt(0.6 * 0.4 / 90), rel=0.1)


def test_paired_difference_cancels_the_spread_both_share():
    """Two models scored on the same items, one 0.05 better on every item: the paired interval resolves the
    difference although the unpaired intervals overlap; identical models give exactly 0."""
    rng = np.random.default_rng(1)
    base = rng.random(60)  # item difficulty, shared by both models
    better = base + 0.05
    a, b = bootstrap_interval(better), bootstrap_interval(base)
    assert a.low < b.high  # the unpaired intervals overlap
    diff = paired_difference_interval(better, base)
    assert diff.excludes(0.0) and diff.estimate == pytest.approx(0.05)
    same = paired_difference_interval(base, base)
    assert (same.low, same.high) == (0.0, 0.0) and not same.excludes(0.0)
    noise = paired_difference_interval(rng.random(60), rng.random(60))  # no real difference: 0 stays inside
    assert not noise.excludes(0.0)


@pytest.mark.parametrize("values, message", [([], "non-empty"), ([0.1, float("nan")], "finite")])
def test_bad_values_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        bootstrap_interval(values)
    with pytest.raises(ConfigError, match="same items"):
        paired_difference_interval([1.0, 2.0], [1.0])
    with pytest.raises(ConfigError, match="level"):
        bootstrap_interval([1.0, 2.0], level=1.5)
