"""Statistics of the reports: small pure functions over arrays, each named in the report.

Paired and stratified t estimates (:func:`paired`, :func:`stratified`; an sd is never
pooled across strata), Holm's adjustment (:func:`holm`), the verdict of an estimate
(:func:`verdict`) and rliable's seeded stratified-bootstrap intervals
(:func:`interval_estimates`, Agarwal et al., 2021). Nothing here formats text.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "ALPHA",
    "BOOTSTRAP_REPS",
    "Estimate",
    "holm",
    "interval_estimates",
    "paired",
    "stratified",
    "verdict",
]

ALPHA = 0.05
"""Two-sided significance level of every verdict (95% intervals)."""

BOOTSTRAP_REPS = 2000
"""Bootstrap resamples of the stratified-bootstrap intervals."""


@dataclass(frozen=True)
class Estimate:
    """A mean with its t interval and test against zero.

    Attributes:
        mean: The estimate.
        se: Its standard error (0: every difference equal; NaN: fewer than two values).
        df: Degrees of freedom of its t distribution (NaN without a test).
        n: Values it rests on (replicates; for a stratified mean, their total).
        low: Low end of the 95% interval.
        high: High end of the 95% interval.
        p: Two-sided p-value of "the mean is 0" (NaN without a test; 1 for a mean of
            exactly 0 with no spread, 0 for a nonzero mean with no spread).
        identical: Every value was exactly 0 (the two choices played the same).
    """

    mean: float
    se: float
    df: float
    n: int
    low: float
    high: float
    p: float
    identical: bool = False

    def scaled(self, factor: float) -> Estimate:
        """The estimate of ``factor * mean`` (``factor > 0``)."""
        return Estimate(
            self.mean * factor, self.se * factor, self.df, self.n, self.low * factor, self.high * factor,
            self.p, self.identical,
        )

    @property
    def half_width(self) -> float:
        """Half the width of the 95% interval."""
        return (self.high - self.low) / 2.0


def _t_estimate(mean: float, se: float, df: float, n: int, identical: bool = False) -> Estimate:
    from scipy.stats import t as student

    if not math.isfinite(mean):
        return Estimate(mean, math.nan, math.nan, n, math.nan, math.nan, math.nan)
    if not (df > 0) or not math.isfinite(se):
        return Estimate(mean, math.nan, math.nan, n, math.nan, math.nan, math.nan, identical)
    if se == 0.0:
        return Estimate(mean, 0.0, df, n, mean, mean, 1.0 if mean == 0 else 0.0, identical)
    q = float(student.ppf(1.0 - ALPHA / 2.0, df))
    p = float(2.0 * student.sf(abs(mean) / se, df))
    return Estimate(mean, se, df, n, mean - q * se, mean + q * se, p, identical)


def paired(differences: Sequence[float] | np.ndarray) -> Estimate:
    """The mean of paired differences, with Student's t on ``n - 1`` degrees of freedom
    (:func:`scipy.stats.ttest_1samp` and its confidence interval).

    Args:
        differences: One per replicate (NaN entries are dropped).

    Returns:
        The :class:`Estimate`; with one value, no interval or test (NaN).
    """
    from scipy.stats import ttest_1samp

    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, math.nan, math.nan, math.nan)
    identical = bool(np.all(d == 0.0))
    mean = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    if n < 2 or se == 0.0:  # no test, or no spread: scipy gives NaN there
        return _t_estimate(mean, se, n - 1.0 if n > 1 else math.nan, n, identical)
    test = ttest_1samp(d, 0.0)
    interval = test.confidence_interval(1.0 - ALPHA)
    return Estimate(mean, se, float(test.df), n, float(interval.low), float(interval.high), float(test.pvalue), identical)


def stratified(strata: Sequence[Sequence[float] | np.ndarray]) -> Estimate:
    """The mean of per-stratum means, each stratum's variance its own.

    ``se = sqrt(sum_i s_i^2 / n_i) / k`` over the ``k`` strata (``s_i`` the sd of stratum
    ``i``, ``n_i`` its values), with Welch-Satterthwaite degrees of freedom
    ``(sum_i v_i)^2 / sum_i (v_i^2 / (n_i - 1))``, ``v_i = s_i^2 / n_i``. The interval is
    conditional on these strata (the test instances), not on a population of them.

    Returns:
        The :class:`Estimate`; NaN interval where a stratum has fewer than two values.
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in strata]
    arrays = [a[np.isfinite(a)] for a in arrays]
    if not arrays or any(a.size == 0 for a in arrays):
        return Estimate(math.nan, math.nan, math.nan, 0, math.nan, math.nan, math.nan)
    k = len(arrays)
    n = sum(int(a.size) for a in arrays)
    mean = float(np.mean([a.mean() for a in arrays]))
    identical = all(bool(np.all(a == 0.0)) for a in arrays)
    if any(a.size < 2 for a in arrays):
        return _t_estimate(mean, math.nan, math.nan, n, identical)
    v = np.array([a.var(ddof=1) / a.size for a in arrays])
    se = math.sqrt(float(v.sum())) / k
    denominator = float(np.sum(v**2 / np.array([a.size - 1 for a in arrays])))
    df = float(v.sum() ** 2 / denominator) if denominator > 0 else float(n - k)
    return _t_estimate(mean, se, df, n, identical)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values; NaN entries stay NaN and do not count as tests.

    The ``j``-th smallest of ``m`` p-values is multiplied by ``m - j + 1``, made
    non-decreasing and capped at 1 (statsmodels' ``multipletests(method="holm")`` gives
    the same values; it is not called here because it runs ``gc.collect()`` at every
    call, a quarter of a second each, half a minute of a report). A test is rejected at
    level ``alpha`` when its adjusted p-value is below ``alpha``.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    running = 0.0
    for rank, i in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, float(p[i]) * (finite.size - rank)))
        out[i] = running
    return out.tolist()


def verdict(estimate: Estimate, p: float | None = None) -> str:
    """``"above"`` or ``"below"`` (beyond noise: ``p < ALPHA``), ``"within noise"``,
    ``"identical"`` (every paired difference exactly 0) or ``"no test"`` (too few
    replicates).

    Args:
        estimate: The estimate.
        p: Its p-value after a multiple-comparison adjustment; default ``estimate.p``.
    """
    if estimate.identical:
        return "identical"
    p = estimate.p if p is None else p
    if not math.isfinite(p):
        return "no test"
    if p < ALPHA:
        return "above" if estimate.mean > 0 else "below"
    return "within noise"


K = TypeVar("K", bound=Hashable)


def interval_estimates(
    scores: Mapping[K, Any], statistic: Callable[..., Any], reps: int = BOOTSTRAP_REPS
) -> dict[K, np.ndarray]:
    """Point estimates and 95% stratified-bootstrap percentile intervals, with rliable.

    One call of :func:`rliable.library.get_interval_estimates` per key, each with NumPy's
    global RNG (which rliable's stratified bootstrap draws from) seeded with 0 and
    restored afterwards: the result is the same at every call, and two keys with the
    same scores get the same interval.

    Args:
        scores: Per key, a ``(runs, tasks)`` matrix (runs are resampled within each
            task: replicates within each instance), or a tuple of them for a statistic
            of several.
        statistic: Maps a matrix (or the tuple's matrices) to a number or a 1-D array.
        reps: Bootstrap resamples.

    Returns:
        Per key, an array ``(3, m)``: the point estimate, the low and the high end of
        the interval of each of the ``m`` values of ``statistic``.
    """
    from rliable import library as rly

    out: dict[K, np.ndarray] = {}
    for key, matrix in scores.items():
        with global_rng_seeded(), warnings.catch_warnings():
            # rliable hands its RandomState to arch, which asks for the newer keyword
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            point, interval = rly.get_interval_estimates(
                {key: matrix}, lambda *x: np.atleast_1d(statistic(*x)), reps=reps,
                random_state=np.random.RandomState(0),
            )
        out[key] = np.vstack([np.atleast_1d(point[key]), np.reshape(interval[key], (2, -1))])
    return out


@contextlib.contextmanager
def global_rng_seeded(seed: int = 0) -> Iterator[None]:
    """NumPy's global RNG seeded with ``seed`` inside, and given back as it was after
    (rliable draws from it in places): the same statistics at every call."""
    outside = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(outside)
