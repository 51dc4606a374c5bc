"""The arithmetic behind ``benchmarks.flame_overhead --paired``: ratios of totals over triplets
of windows, their bootstrap standard error, and when a verdict is given at all."""
from __future__ import annotations

import random

import pytest

from benchmarks.flame_overhead import MIN_JUDGED_TRIPLETS, paired_verdict, summarize_paired


def _window(triplet: int, condition: str, requests: int, busy_s: float, elapsed_s: float = 0.25) -> dict:
    return {"triplet": triplet, "condition": condition, "requests": requests, "elapsed_s": elapsed_s,
            "busy_s": busy_s, "rps": requests / elapsed_s, "busy_us_per_request": busy_s / requests * 1e6,
            "blocked_us_per_request": 0.0, "profiler_cpu": 0.0, "load_cpu": 0.0}


def _triplets(n: int, target_cost: float, decoy_cost: float, seed: int = 1) -> list[dict]:
    """Windows whose load and per-request cost drift from triplet to triplet (as the machine
    does), with the target and the decoy costing a fixed share more than "none" in each."""
    draw, windows = random.Random(seed), []
    for t in range(n):
        requests = int(draw.uniform(8000, 12000))
        per_request = draw.uniform(9e-6, 13e-6)
        for condition, cost in (("none", 0.0), ("target", target_cost), ("decoy", decoy_cost)):
            windows.append(_window(t, condition, requests, requests * per_request * (1 + cost)))
    return windows


def test_a_fixed_cost_per_triplet_is_recovered_as_the_ratio_of_totals():
    summary = summarize_paired(_triplets(40, target_cost=0.02, decoy_cost=0.0))
    assert summary["complete_triplets"] == 40
    assert summary["target"]["busy_ratio"]["ratio"] == pytest.approx(1.02, rel=1e-9)
    assert summary["decoy"]["busy_ratio"]["ratio"] == pytest.approx(1.0, rel=1e-9)
    assert summary["target"]["rps_ratio"]["ratio"] == pytest.approx(1.0, rel=1e-9)   # same requests


def test_the_standard_error_reflects_the_spread_between_triplets():
    windows = _triplets(200, target_cost=0.0, decoy_cost=0.0)
    draw = random.Random(7)
    for w in windows:                              # independent noise within each triplet
        if w["condition"] == "target":
            w["busy_s"] *= draw.gauss(1.0, 0.05)
    noisy = summarize_paired(windows)["target"]["busy_ratio"]
    # 5% per window over 200 triplets: about 0.05 / sqrt(200) = 0.35% (the totals weigh windows
    # by their requests, so not exactly)
    assert 0.002 < noisy["se"] < 0.006
    assert abs(noisy["ratio"] - 1.0) < 4 * noisy["se"]
    exact = summarize_paired(_triplets(200, target_cost=0.0, decoy_cost=0.0))["target"]["busy_ratio"]
    assert exact["se"] == pytest.approx(0.0, abs=1e-12)


def test_a_triplet_missing_a_window_is_left_out():
    windows = _triplets(10, target_cost=0.01, decoy_cost=0.0)
    windows.append(_window(10, "none", 10000, 0.5))        # a last triplet cut short
    windows.append(_window(10, "target", 10000, 5.0))      # wildly off: would move the ratio
    summary = summarize_paired(windows)
    assert summary["complete_triplets"] == 10
    assert summary["target"]["busy_ratio"]["ratio"] == pytest.approx(1.01, rel=1e-9)


@pytest.mark.parametrize("cost, se, held, triplets, verdict", [
    (0.002, 0.003, True, MIN_JUDGED_TRIPLETS, "met"),
    (0.005, 0.003, True, MIN_JUDGED_TRIPLETS, "MISSED"),       # 0.5% + 2 x 0.3% crosses 1%
    (-0.02, 0.001, False, 1800, "MISSED"),                    # the load slipped: nothing is met
    (-0.024, 0.009, True, 4, "not judged"),                   # what 4 triplets once printed as met
])
def test_the_verdict_needs_the_bound_a_held_load_and_enough_triplets(cost, se, held, triplets, verdict):
    assert paired_verdict(cost, se, held, triplets).startswith(verdict)
