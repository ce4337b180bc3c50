"""A/B statistics over users (the unit of assignment), not requests: click-through per arm with a
bootstrap 95% interval, the difference to the control arm with its interval and a p-value, a
sample-ratio-mismatch check against the configured traffic shares, and the users needed to detect a
given lift. Requests are correlated within a user, so resampling users keeps the intervals honest,
and the sample size carries the design effect of that correlation (estimated from the log).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP = 2000
BOOTSTRAP_MAX_USERS = 5000  # beyond this, the normal (delta-method) interval: same answer, no 2000 x users matrix
SRM_ALPHA = 0.001  # the usual threshold: a mismatch this unlikely means the split is broken, not unlucky


@dataclass
class ArmSample:
    """Per user of one arm: requests served and requests with at least one click."""

    arm: str
    requests: np.ndarray
    clicked: np.ndarray

    @property
    def users(self) -> int:
        return len(self.requests)

    @property
    def ctr(self) -> float:
        total = float(self.requests.sum())
        return float(self.clicked.sum()) / total if total else 0.0


def _delta_se(s: ArmSample) -> float:
    """Standard error of the ratio CTR = sum(clicked) / sum(requests) over independent users."""
    if s.users < 2 or s.requests.sum() == 0:
        return 0.0
    resid = s.clicked - s.ctr * s.requests
    return float(np.sqrt(resid.var(ddof=1) * s.users) / s.requests.sum())


def _boot_ctr(s: ArmSample, rng: np.random.Generator) -> np.ndarray:
    """BOOTSTRAP resampled CTRs (ratio of sums over resampled users); normal draws for large arms."""
    if s.users == 0:
        return np.zeros(BOOTSTRAP)
    if s.users > BOOTSTRAP_MAX_USERS:
        return rng.normal(s.ctr, _delta_se(s), BOOTSTRAP)
    idx = rng.integers(0, s.users, size=(BOOTSTRAP, s.users))
    req = s.requests[idx].sum(axis=1)
    return np.where(req > 0, s.clicked[idx].sum(axis=1) / np.maximum(req, 1), 0.0)


def ctr_interval(s: ArmSample, seed: int = 0) -> tuple[float, float]:
    boot = _boot_ctr(s, np.random.default_rng(seed))
    return float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def difference(treatment: ArmSample, control: ArmSample, seed: int = 0) -> dict[str, float]:
    """CTR(treatment) - CTR(control): the estimate, its 95% interval and a two-sided bootstrap p-value."""
    rng = np.random.default_rng(seed)
    d = _boot_ctr(treatment, rng) - _boot_ctr(control, rng)
    est = treatment.ctr - control.ctr
    p = 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0)))
    return {"diff": est, "low": float(np.percentile(d, 2.5)), "high": float(np.percentile(d, 97.5)), "p_value": min(1.0, p)}


def sample_ratio_mismatch(users: Sequence[int], shares: Sequence[float]) -> dict[str, float]:
    """Chi-square goodness of fit of users per arm against the configured traffic shares."""
    from scipy.stats import chisquare

    weights = np.asarray(shares, dtype=float)
    counts = np.asarray(users, dtype=float)
    if np.any(counts[weights <= 0] > 0):  # randomised users on an arm configured to get none: a mismatch by itself
        return {"p_value": 0.0, "mismatch": 1.0}
    counts, weights = counts[weights > 0], weights[weights > 0]  # traffic-0 arms (forced only) take no part
    total = counts.sum()
    if total == 0 or weights.sum() <= 0 or len(counts) < 2:
        return {"p_value": 1.0, "mismatch": 0.0}
    expected = weights / weights.sum() * total
    p = float(chisquare(counts, expected).pvalue)
    return {"p_value": p, "mismatch": float(p < SRM_ALPHA)}


def intra_user_correlation(s: ArmSample) -> float:
    """The intra-user correlation (ICC) of clicked-or-not over requests: how much more alike two
    requests of one user are than two requests of different users. The one-way ANOVA estimator for
    clusters of unequal size (Donner 1986), clipped to [0, 1]; 0 when it cannot be estimated (fewer
    than two users, no user with two requests, or no variation at all)."""
    n, y = s.requests.astype(float), s.clicked.astype(float)
    keep = n > 0
    n, y = n[keep], y[keep]
    k, total = len(n), float(n.sum())
    if k < 2 or total <= k:
        return 0.0
    between = float((y * y / n).sum() - y.sum() ** 2 / total)
    msb = between / (k - 1)
    msw = (float(y.sum()) - float((y * y / n).sum())) / (total - k)  # clicked is 0/1 per request: sum of squares = sum
    n0 = (total - float((n * n).sum()) / total) / (k - 1)
    denom = msb + (n0 - 1) * msw
    if denom <= 0:
        return 0.0
    return float(min(1.0, max(0.0, (msb - msw) / denom)))


def users_needed(baseline_ctr: float, relative_lift: float = 0.1, alpha: float = 0.05, power: float = 0.8,
                 requests_per_user: float = 1.0, icc: float = 0.0) -> int:
    """Users per arm to detect ``relative_lift`` on ``baseline_ctr`` (two-proportion normal approximation).

    A user's requests are not independent (the same person clicks alike), so m requests of one user
    carry less than m users' worth: the request count of the independent formula is inflated by the
    design effect 1 + (m - 1) * ICC before dividing by m requests per user (``icc`` from
    intra_user_correlation over the log). With ICC 0 that is the independent count / m; with ICC 1 a
    user is worth one request, whatever m."""
    from scipy.stats import norm

    if not 0 <= icc <= 1:
        raise ValueError(f"icc must be in [0, 1], got {icc}")
    p1 = min(max(baseline_ctr, 1e-6), 1 - 1e-6)
    p2 = min(p1 * (1 + relative_lift), 1 - 1e-6)
    if p2 == p1:
        return 0
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    n_requests = z * z * (p1 * (1 - p1) + p2 * (1 - p2)) / (p2 - p1) ** 2
    m = max(requests_per_user, 1.0)
    design_effect = 1 + (m - 1) * icc
    return math.ceil(n_requests * design_effect / m)
