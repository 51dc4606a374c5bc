"""The arithmetic of the benchmark tables: ratios paired round by round, their spread, the
``~`` mark of a difference inside the spread, and callgrind's instructions per operation."""
from __future__ import annotations

import pytest

from benchmarks.micro import instructions_per_op, render_callgrind
from benchmarks.spread import Spread, median, paired_spread, spread_of
from benchmarks.suite import ratio_table


def _rows(values: dict[str, list[float]], name: str = "call_soon") -> list[dict]:
    """Raw per-round results: loop -> its per_s in round 0, 1, ..."""
    return [{"bench": name, "loop": loop, "round": r, "per_s": v, "peak_kib": 100}
            for loop, seq in values.items() for r, v in enumerate(seq)]


def test_ratios_are_paired_within_a_round_so_a_slow_round_cancels():
    # Round 1 ran while the machine was busy: both loops at half speed. Paired, every round
    # says 1.2x; comparing medians of each loop's rounds would mix a busy round with a calm one.
    results = _rows({"runtime": [120, 60, 120], "asyncio": [100, 50, 100]})
    spread = paired_spread(results, "bench", "call_soon", "runtime", "asyncio", "per_s")
    assert spread == Spread(pytest.approx(1.2), pytest.approx(1.2), pytest.approx(1.2), 3)
    assert not spread.inside


def test_spread_is_the_lowest_and_highest_round_and_the_ratio_their_median():
    spread = spread_of([1.1, 0.9, 1.3, 1.0, 1.2])
    assert (spread.ratio, spread.low, spread.high, spread.rounds) == (1.1, 0.9, 1.3, 5)
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(ValueError):
        median([])


@pytest.mark.parametrize("ratios, inside", [
    ([0.95, 1.02, 0.98], True),    # rounds on both sides of parity: cannot tell
    ([0.90, 0.94, 0.97], False),   # every round below: a loss
    ([1.01, 1.05, 1.20], False),   # every round above: a win
    ([1.00, 1.10, 1.20], True),    # a round at parity counts as inside
    ([0.80], False),               # one round has no spread and is never marked
])
def test_inside_the_spread_means_the_rounds_disagree_on_the_side_of_one(ratios, inside):
    assert spread_of(ratios).inside is inside
    assert spread_of(ratios).format().endswith(" ~") is inside


def test_a_failed_round_is_left_out_of_both_sides():
    results = _rows({"runtime": [110, 130, 120], "asyncio": [100, 100, 100]})
    results[1]["error"] = "crashed"  # runtime's round 1
    spread = paired_spread(results, "bench", "call_soon", "runtime", "asyncio", "per_s")
    assert spread.rounds == 2 and spread.low == pytest.approx(1.1) and spread.high == pytest.approx(1.2)
    assert paired_spread(results, "bench", "timers", "runtime", "asyncio", "per_s") is None


def test_the_table_marks_the_row_inside_the_spread_and_names_the_alternative():
    results = (_rows({"runtime": [97, 104, 99], "asyncio": [100, 100, 100],
                      "uvloop": [200, 210, 190]}, "spawn_await")
               + _rows({"runtime": [150, 160, 155], "asyncio": [100, 100, 100],
                        "uvloop": [300, 300, 300]}, "call_soon"))
    table = ratio_table("micro", results, "bench", {"spawn_await": "tasks/s", "call_soon": "ev/s"})
    spawn = next(line for line in table.splitlines() if line.startswith("spawn_await"))
    call_soon = next(line for line in table.splitlines() if line.startswith("call_soon"))
    assert "0.99x 0.97-1.04 ~" in spawn and "uvloop" in spawn and "2.00x 1.90-2.10" in spawn
    assert "1.55x 1.50-1.60" in call_soon and "~" not in call_soon and "3.00x 3.00-3.00" in call_soon
    assert "1.00x" in call_soon.split("3.00-3.00")[1]  # peak memory runtime / asyncio


def test_instructions_per_op_is_the_difference_between_n_and_2n_over_n():
    # 1,000,000 paid once (start-up, imports), 250 per operation.
    assert instructions_per_op(1_000_000 + 250 * 4000, 1_000_000 + 250 * 8000, 4000) == 250
    with pytest.raises(ValueError):
        instructions_per_op(2_000, 1_000, 10)


def test_the_callgrind_table_gives_ratios_to_asyncio_and_uvloop_and_what_accel_buys():
    report = {"loops": ("runtime", "asyncio", "uvloop", "runtime-pure"), "results": [
        {"bench": "call_soon", "loop": "asyncio", "ir_per_op": 9000.0},
        {"bench": "call_soon", "loop": "runtime", "ir_per_op": 3600.0},
        {"bench": "call_soon", "loop": "uvloop", "ir_per_op": 3000.0},
        {"bench": "call_soon", "loop": "runtime-pure", "ir_per_op": 7200.0}]}
    line = render_callgrind(report).splitlines()[-1].split()
    assert line == ["call_soon", "9,000", "3,600", "3,000", "2.50x", "3.00x", "1.20x", "7,200", "2.00x"]


def test_tracing_overhead_under_callgrind_is_per_request_and_its_verdict_follows_the_targets():
    from benchmarks import tracing_overhead as to
    lo, hi = to.CALLGRIND_REQUESTS
    # 5,000,000 paid once, 40,000 a request; each run is a warm-up trial and a measured one
    assert to.per_request(5_000_000 + 40_000 * 2 * lo, 5_000_000 + 40_000 * 2 * hi) == 40_000
    with pytest.raises(ValueError):
        to.per_request(2_000, 1_000)
    report = to.callgrind_report({1: {"removed": 100.0, "off": 100.5, "on": 104.0},
                                  50: {"removed": 100.0, "off": 100.5, "on": 104.0}})
    assert report["off_within_target"] and not report["on_within_target"]  # 3.8% > 3% at 50
    assert to.callgrind_report({1: {"removed": 100.0, "off": 101.5, "on": 101.5},
                                50: {"removed": 100.0, "off": 100.0, "on": 101.0}})["off_within_target"] is False
    text = to.render_callgrind(report)
    assert " 1 on " in " ".join(text.split()) and "-3.8%" in text and "-0.5%" in text
    assert "on within 5% (1 conn) / 3% (50): False" in text
