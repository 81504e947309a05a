"""The statistics verdicts rest on: binomial intervals against known values and coverage, the block bootstrap, the
multi-modal detector on synthetic and on a real timing series recorded on a 2-core machine, and the judge's
"within noise" notes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from edgeprune.judge import assess_quality, judge
from edgeprune.profiles import load_profile
from edgeprune.stats import (
    block_percentile,
    bootstrap_block_percentile,
    detect_modes,
    paired_difference_interval,
    straddles,
    timing_summary,
    wilson_interval,
)
from edgeprune.types import Measurement

RECORDED = Path(__file__).parent / "data" / "digits_2threads_timings.json"


def _lognormal(rng, centre_ms, sd, n):
    return np.exp(rng.normal(np.log(centre_ms), sd, n))


# --- binomial intervals ---------------------------------------------------------------------------


@pytest.mark.parametrize("k, n, low, high", [(0, 10, 0.0, 0.27753), (81, 263, 0.25529, 0.36621),
                                             (10, 10, 0.72247, 1.0), (350, 359, 0.95305, 0.98676)])
def test_wilson_interval_known_values(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=1e-5)
    ref = binomtest(k, n).proportion_ci(method="wilson")  # an independent implementation
    assert got == pytest.approx((ref.low, ref.high), abs=1e-9)
    with pytest.raises(ValueError):
        wilson_interval(5, 0)


def test_paired_difference_interval_is_narrow_for_agreeing_models_and_covers_the_truth():
    same = np.r_[np.ones(300, bool), np.zeros(59, bool)]
    diff, low, high = paired_difference_interval(same, same)
    assert diff == 0.0 and low < 0 < high and high - low < 0.02
    other = same.copy()
    other[:3] = False  # the artifact gets 3 more samples wrong: a 0.84 point drop, not resolvable on 359 samples
    diff, low, high = paired_difference_interval(same, other)
    assert diff == pytest.approx(3 / 359) and low < 0 < diff < high
    # two independent-looking samples would give a much wider interval than paired ones that share most outcomes
    lo_i, hi_i = wilson_interval(300, 359)
    assert high - low < (hi_i - lo_i)
    # coverage: the true difference lies inside the interval about 95% of the time
    rng = np.random.default_rng(1)
    p_both, p_first, p_second, n = 0.85, 0.04, 0.02, 359
    covered = 0
    for _ in range(400):
        u = rng.random(n)
        first = u < p_both + p_first
        second = (u < p_both) | ((u >= p_both + p_first) & (u < p_both + p_first + p_second))
        _, lo, hi = paired_difference_interval(first, second)
        covered += lo <= p_first - p_second <= hi
    assert 0.92 <= covered / 400 <= 0.995


# --- bootstrap of block percentiles ---------------------------------------------------------------


def test_block_bootstrap_interval_holds_the_statistic_and_follows_the_blocks_spread():
    rng = np.random.default_rng(0)
    steady = [_lognormal(rng, 0.1, 0.03, 50) for _ in range(5)]
    p50 = block_percentile(steady, 50)
    low, high = bootstrap_block_percentile(steady, 50)
    assert low <= p50 <= high and (high - low) / p50 < 0.05
    assert bootstrap_block_percentile(steady, 50) == (low, high)  # deterministic
    # one block in a slow spell moves the median of blocks little, but widens the interval
    spell = steady[:4] + [_lognormal(rng, 0.2, 0.03, 50)]
    low2, high2 = bootstrap_block_percentile(spell, 50)
    assert block_percentile(spell, 50) < 0.11 and high2 > high
    # with only each block's p50 (a runner without per-run samples) the interval spans the blocks' spread
    blocks = [[0.10], [0.13], [0.11]]
    low3, high3 = bootstrap_block_percentile(blocks, 50)
    assert 0.10 <= low3 <= 0.11 <= high3 <= 0.13


def test_timing_summary_keys_and_basis():
    rng = np.random.default_rng(2)
    blocks = [list(_lognormal(rng, 0.1, 0.03, 40)) for _ in range(3)]
    t = timing_summary(blocks, [float(np.median(b)) for b in blocks], [float(np.percentile(b, 90)) for b in blocks])
    assert t["basis"] == "per-run samples" and t["blocks"] == 3 and t["runs_per_block"] == 40
    assert t["p50_ci95_ms"][0] <= t["p50_ms"] <= t["p50_ci95_ms"][1] < t["p90_ms"] <= t["p90_ci95_ms"][1]
    assert t["multimodal"] is False and len(t["modes"]) == 1
    only = timing_summary(None, [0.1, 0.12, 0.11], [0.13, 0.15, 0.14])
    assert only["basis"].startswith("block p50/p90") and only["p50_ms"] == 0.11 and only["runs_per_block"] is None


# --- multi-modal detection ------------------------------------------------------------------------


def test_unimodal_series_have_one_mode():
    rng = np.random.default_rng(0)
    assert len(detect_modes(_lognormal(rng, 0.066, 0.05, 300))) == 1
    assert len(detect_modes(_lognormal(rng, 0.066, 0.3, 300))) == 1  # wide, but one state
    tail = np.r_[_lognormal(rng, 0.066, 0.05, 285), 0.066 * rng.uniform(1.5, 4.0, 15)]  # 5% stragglers: a tail
    assert len(detect_modes(tail)) == 1
    close = np.r_[_lognormal(rng, 0.066, 0.02, 150), _lognormal(rng, 0.070, 0.02, 150)]  # 6% apart: one mode
    assert len(detect_modes(close)) == 1
    assert len(detect_modes([0.1, 0.2, 0.1])) == 1  # too few to tell


@pytest.mark.parametrize("fast_share", [0.5, 0.67, 0.9])
def test_a_fast_and_a_slow_state_are_two_modes(fast_share):
    rng = np.random.default_rng(3)
    n_fast = int(300 * fast_share)
    series = np.r_[_lognormal(rng, 0.066, 0.05, n_fast), _lognormal(rng, 0.13, 0.05, 300 - n_fast)]
    modes = detect_modes(rng.permutation(series))
    assert len(modes) == 2
    assert modes[0]["center_ms"] == pytest.approx(0.066, rel=0.05)
    assert modes[1]["center_ms"] == pytest.approx(0.13, rel=0.05)
    assert modes[0]["share"] == pytest.approx(fast_share, abs=0.03)


def test_recorded_two_thread_series_from_a_shared_two_core_machine_is_multi_modal():
    recorded = json.loads(RECORDED.read_text())
    blocks = recorded["blocks_ms"]
    assert len(blocks) == 6 and all(len(b) == 50 for b in blocks)
    pooled = [s for b in blocks for s in b]
    modes = detect_modes(pooled)
    # most runs take about 0.28 ms; about one in ten waits for a core the other jobs hold, and takes milliseconds
    assert len(modes) == 2
    assert 0.2 < modes[0]["center_ms"] < 0.4 and modes[0]["share"] > 0.8
    assert modes[1]["center_ms"] > 10 * modes[0]["center_ms"]
    summary = timing_summary(blocks, [float(np.median(b)) for b in blocks],
                             [float(np.percentile(b, 90)) for b in blocks])
    assert summary["multimodal"] is True
    low, high = summary["p50_ci95_ms"]
    assert low <= summary["p50_ms"] <= high < 0.4  # the p50 stays on the fast mode, with a tight interval
    # without the preempted runs the same series is one mode
    assert len(detect_modes([s for s in pooled if s < 1.0])) == 1


# --- the judge says "within noise" ----------------------------------------------------------------


def _measurement(p50: float, timing: dict) -> Measurement:
    return Measurement(latency_p50_ms=p50, latency_p90_ms=p50 * 1.2, latency_mean_ms=p50, runs=150, warmup_runs=10,
                       threads=1, size_bytes=1000, peak_memory_mb=None, memory_method="none", where="host",
                       runner="test", runtime_versions={}, outputs=np.zeros((1, 2), np.float32), timing=timing)


def test_judge_marks_latency_and_accuracy_verdicts_within_noise():
    labels = np.r_[np.zeros(180, int), np.ones(179, int)]
    dense = np.eye(2, dtype=np.float32)[labels]
    wrong = dense.copy()
    wrong[:4] = wrong[:4, ::-1]  # 4 of 359 samples flip: a 1.11 point drop
    quality = assess_quality("fp32", wrong, wrong, dense, labels)
    assert quality.split == "test" and quality.accuracy_drop_pct == pytest.approx(100 * 4 / 359, abs=1e-3)
    low, high = quality.accuracy_drop_ci95_pct
    assert low < 1.0 < high
    assert quality.artifact_accuracy_ci95 == pytest.approx(wilson_interval(355, 359))
    assert quality.to_dict()["reference_accuracy_ci95"] == [round(v, 6) for v in wilson_interval(359, 359)]
    profile = load_profile("host").with_budget(latency_ms=0.1, max_accuracy_drop_pct=1.0)
    timing = {"blocks": 3, "p50_ci95_ms": [0.095, 0.104], "multimodal": True,
              "modes": [{"center_ms": 0.097, "share": 0.7}, {"center_ms": 0.2, "share": 0.3}]}
    checks = {c.name: c for c in judge(profile, _measurement(0.097, timing), quality).checks}
    assert checks["latency"].status == "pass" and checks["latency"].note.startswith("within noise")
    assert "multi-modal" in checks["latency"].note and "0.095..0.104 ms" in checks["latency"].note
    assert checks["accuracy_drop"].status == "fail" and checks["accuracy_drop"].note.startswith("within noise")
    assert "test top-1" in checks["accuracy_drop"].note
    clear = {"blocks": 3, "p50_ci95_ms": [0.05, 0.06], "multimodal": False, "modes": []}
    checks = {c.name: c for c in judge(profile, _measurement(0.055, clear), quality).checks}
    assert checks["latency"].status == "pass" and "within noise" not in checks["latency"].note
    assert straddles([0.9, 1.1], 1.0) and not straddles([0.9, 1.0], 1.0) and not straddles(None, 1.0)
