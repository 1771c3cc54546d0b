"""The statistics behind every verdict, on cases whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from benchmarks.reports.stats import holm, paired, stratified, verdict


def test_paired_is_students_t_on_n_minus_1_degrees_of_freedom():
    d = np.array([-0.98, -1.01, -0.95, -1.02])
    e = paired(d)
    se = d.std(ddof=1) / 2.0
    assert e.mean == pytest.approx(d.mean()) and e.se == pytest.approx(se) and e.df == 3 and e.n == 4
    q = scipy_stats.t.ppf(0.975, 3)
    assert (e.low, e.high) == pytest.approx((d.mean() - q * se, d.mean() + q * se))
    assert e.p == pytest.approx(2 * scipy_stats.t.sf(abs(d.mean()) / se, 3))
    assert verdict(e) == "below"


def test_three_standard_errors_on_two_degrees_of_freedom_is_not_beyond_noise():
    """z = 3 with 3 replicates is p = 0.095 two-sided: within noise at 5%."""
    d = np.array([1.0, 2.0, 3.0])
    d = d - d.mean() + 3.0 * d.std(ddof=1) / math.sqrt(3)  # mean exactly 3 standard errors
    e = paired(d)
    assert e.mean / e.se == pytest.approx(3.0)
    assert e.p == pytest.approx(0.0955, abs=1e-3) and verdict(e) == "within noise"


def test_identical_plays_and_single_replicates():
    assert verdict(paired([0.0, 0.0, 0.0])) == "identical"
    one = paired([0.4])
    assert math.isnan(one.se) and verdict(one) == "no test"
    assert paired([np.nan, 1.0, 1.0]).n == 2
    constant = paired([0.5, 0.5, 0.5])
    assert constant.se == 0 and constant.p == 0 and verdict(constant) == "above"


def test_stratified_never_pools_the_sd_across_strata():
    """One stratum 1 dB below with little noise, one tied: the mean of means is -0.5 with a
    small interval; pooling the eight values into one sd would call it noise."""
    below = np.array([-1.00, -0.98, -1.02, -0.99])
    tied = np.array([0.01, -0.02, 0.015, -0.005])
    e = stratified([below, tied])
    assert e.mean == pytest.approx((below.mean() + tied.mean()) / 2)
    v = np.array([below.var(ddof=1) / 4, tied.var(ddof=1) / 4])
    assert e.se == pytest.approx(math.sqrt(v.sum()) / 2)
    assert e.df == pytest.approx(v.sum() ** 2 / np.sum(v**2 / 3))
    assert verdict(e) == "below"
    pooled = np.concatenate([below, tied])
    assert abs(pooled.mean() / (pooled.std(ddof=1) / math.sqrt(8))) < 3.0


def test_stratified_with_equal_strata_is_the_mean_of_means():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([10.0, 10.5, 11.0, 9.5, 9.0])
    assert stratified([a, b]).mean == pytest.approx((2.0 + 10.0) / 2)
    assert verdict(stratified([a, [4.0]])) == "no test"


def test_holm_matches_the_step_down_rule_and_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, float("nan")]
    adjusted = holm(p)
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
    draws = np.random.default_rng(0).uniform(0, 0.2, size=(50, 5))
    for row in draws:
        assert holm(row) == pytest.approx(multipletests(row, method="holm")[1].tolist())
    assert holm([]) == []
    e = paired([-1.0, -1.1, -0.9, -1.05])
    assert verdict(e, p=0.2) == "within noise"  # the adjusted p decides
