"""A/B statistics: intervals over users, a difference that is called only when real, SRM, sample size."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch.retrieval_service.ab_stats import (
    ArmSample,
    _delta_se,
    ctr_interval,
    difference,
    intra_user_correlation,
    sample_ratio_mismatch,
    users_needed,
)


def simulate(arm: str, users: int, ctr: float, seed: int, requests_per_user: int = 3) -> ArmSample:
    rng = np.random.default_rng(seed)
    req = np.full(users, requests_per_user, dtype=float)
    return ArmSample(arm, req, rng.binomial(requests_per_user, ctr, users).astype(float))


def test_interval_covers_the_true_ctr_and_narrows_with_users():
    small, big = simulate("a", 100, 0.3, 1), simulate("a", 3000, 0.3, 2)
    lo_s, hi_s = ctr_interval(small)
    lo_b, hi_b = ctr_interval(big)
    assert lo_b < 0.3 < hi_b and (hi_b - lo_b) < (hi_s - lo_s) / 3


def test_a_real_lift_is_called_and_no_lift_is_not():
    base = simulate("base", 2000, 0.20, 3)
    better = simulate("ft", 2000, 0.26, 4)
    same = simulate("same", 2000, 0.20, 5)
    d = difference(better, base)
    assert d["low"] > 0 and d["p_value"] < 0.01 and abs(d["diff"] - 0.06) < 0.02
    n = difference(same, base)
    assert n["low"] < 0 < n["high"] and n["p_value"] > 0.05


def test_users_not_requests_are_the_unit():
    # one heavy user who always clicks must not make an arm look certain
    heavy = ArmSample("x", np.array([1000.0, 1, 1, 1]), np.array([1000.0, 0, 0, 0]))
    lo, hi = ctr_interval(heavy)
    assert hi - lo > 0.5


@pytest.mark.parametrize("users, shares, mismatch", [([5000, 5000], [50, 50], 0.0), ([5400, 4600], [50, 50], 1.0),
                                                     ([9000, 1000], [90, 10], 0.0)])
def test_sample_ratio_mismatch(users, shares, mismatch):
    assert sample_ratio_mismatch(users, shares)["mismatch"] == mismatch


def test_users_needed_follows_the_textbook_formula():
    # 10% -> 11% at alpha 0.05, power 0.8: about 14,750 per arm (two-proportion normal approximation)
    assert 14_000 < users_needed(0.10, 0.10) < 15_500
    assert users_needed(0.10, 0.10, requests_per_user=5) == pytest.approx(users_needed(0.10, 0.10) / 5, rel=0.01)
    assert users_needed(0.10, 0.20) < users_needed(0.10, 0.10)


def correlated(users: int, ctr: float, icc: float, m: int, rng: np.random.Generator, arm: str = "a") -> ArmSample:
    """Users whose own click rate is Beta-distributed around ``ctr``: requests of one user are
    correlated with intra-user correlation 1 / (a + b + 1) = ``icc``."""
    ab = 1 / icc - 1
    p = rng.beta(ctr * ab, (1 - ctr) * ab, users)
    return ArmSample(arm, np.full(users, m, dtype=float), rng.binomial(m, p).astype(float))


def test_intra_user_correlation_is_estimated_from_the_log():
    rng = np.random.default_rng(11)
    assert intra_user_correlation(correlated(4000, 0.2, 0.3, 8, rng)) == pytest.approx(0.3, abs=0.04)
    assert intra_user_correlation(simulate("a", 4000, 0.2, 12, requests_per_user=8)) == pytest.approx(0.0, abs=0.02)
    every_or_never = ArmSample("x", np.full(100, 5.0), np.repeat([0.0, 5.0], 50))
    assert intra_user_correlation(every_or_never) == pytest.approx(1.0)
    assert intra_user_correlation(ArmSample("x", np.array([3.0]), np.array([1.0]))) == 0.0  # one user: no estimate


def test_users_needed_counts_users_with_the_design_effect():
    independent = users_needed(0.10, 0.10)
    assert users_needed(0.10, 0.10, requests_per_user=5, icc=1.0) == independent  # a user is worth one request
    assert users_needed(0.10, 0.10, requests_per_user=5, icc=0.2) == pytest.approx(independent * (1 + 4 * 0.2) / 5, rel=0.01)
    with pytest.raises(ValueError):
        users_needed(0.1, icc=1.5)


def test_users_needed_gives_the_promised_power_when_users_are_correlated():
    """Simulated experiments with correlated users: the ICC-aware size detects the lift about 80 % of the
    time; the size that treats every request as independent detects it far less often."""
    ctr, lift, icc, m = 0.2, 0.3, 0.25, 10
    rng = np.random.default_rng(5)
    est = intra_user_correlation(correlated(5000, ctr, icc, m, rng))
    naive = users_needed(ctr, lift, requests_per_user=m)
    aware = users_needed(ctr, lift, requests_per_user=m, icc=est)
    assert aware > 2 * naive

    def power(users: int, reps: int = 400) -> float:
        hits = 0
        for _ in range(reps):
            a, b = correlated(users, ctr, icc, m, rng, "a"), correlated(users, ctr * (1 + lift), icc, m, rng, "b")
            z = (b.ctr - a.ctr) / np.hypot(_delta_se(a), _delta_se(b))
            hits += z > 1.96
        return hits / reps

    assert 0.72 < power(aware) < 0.9
    assert power(naive) < 0.5


def test_large_arms_use_the_normal_interval_and_agree_with_the_bootstrap():
    from mmsearch.retrieval_service import ab_stats

    big = simulate("a", 20_000, 0.3, 7)
    lo, hi = ctr_interval(big)  # normal draws (no 2000 x 20000 matrix)
    old = ab_stats.BOOTSTRAP_MAX_USERS
    ab_stats.BOOTSTRAP_MAX_USERS = 10**9
    try:
        blo, bhi = ctr_interval(big)  # the bootstrap itself
    finally:
        ab_stats.BOOTSTRAP_MAX_USERS = old
    assert lo < 0.3 < hi and abs(lo - blo) < 0.002 and abs(hi - bhi) < 0.002


class _Log:
    def __init__(self, entries):
        self.entries = entries

    def find(self, collection, match, fields):
        return [e for e in self.entries if all(e.get(k) == v for k, v in match.items())]


def test_report_flags_an_arm_that_got_no_users_and_leaves_forced_requests_out():
    from mmsearch.experiments.spec import parse_experiments
    from mmsearch.retrieval_service.ab_report import render, report

    exp = parse_experiments("scenes:\n  text2text:\n    defaults: {embed_model: m, index: i}\n    layers:\n"
                            "      - {name: model, salt: s, arms: [{name: a, traffic: 50}, {name: b, traffic: 50}]}\n")
    log = [{"scene": "text2text", "arms": {"model": "a"}, "user_id": f"u{i}", "clicks": [1] if i % 3 == 0 else []} for i in range(500)]
    log.append({"scene": "text2text", "arms": {"model": "b"}, "user_id": "dev", "clicks": [1], "forced": True})
    rows = report(_Log(log), "text2text", exp)
    assert [(r["arm"], r["users"], r["forced"]) for r in rows] == [("a", 500, 0), ("b", 0, 1)]
    assert rows[0]["srm_p"] < 1e-6 and "SAMPLE RATIO MISMATCH" in render(rows)


def test_srm_ignores_traffic_zero_arms_unless_randomised_users_reach_them():
    from mmsearch.retrieval_service.ab_stats import sample_ratio_mismatch

    assert sample_ratio_mismatch([500, 0], [100, 0]) == {"p_value": 1.0, "mismatch": 0.0}  # one live arm: nothing to test
    assert sample_ratio_mismatch([250, 250, 0], [50, 50, 0])["mismatch"] == 0.0
    assert sample_ratio_mismatch([250, 240, 3], [50, 50, 0]) == {"p_value": 0.0, "mismatch": 1.0}
