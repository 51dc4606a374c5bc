"""Ratios between loops measured round by round, with their spread, and when a difference is noise.

On a shared two-core machine one loop measured ten minutes after another can look 2x faster or
slower for no reason of its own (timers read 1.53x, then 0.73x, in two runs of the same code).
So the suite measures in rounds, every loop once per round, one after the other, and compares
loops within a round: round r's ratio is runtime's value in round r over asyncio's in round r,
so a burst of load from elsewhere lands on both sides of the fraction. The ratio shown is the
median of those per-round ratios and its spread is their range (lowest to highest): with three
to five rounds, the range is the honest statement of what was seen, where a standard deviation
would pretend to a distribution it cannot estimate.

A ratio whose spread reaches across 1.0 (the lowest round below parity and the highest above)
is "inside the spread": this run cannot tell the two loops apart there, and the table marks it
with ``~`` instead of letting 0.97x read as a loss or 1.03x as a win. A single round has no
spread and is never marked; its row says so by showing no range.

Callgrind's instruction counts need none of this: they are the same on every run (the suite
pins PYTHONHASHSEED), which is why the micro rows also carry them and why they are the figure
to gate on.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """A ratio (the median of per-round ratios) and the lowest and highest round's."""
    ratio: float
    low: float
    high: float
    rounds: int

    @property
    def inside(self) -> bool:
        """The rounds disagree on which side of parity the ratio is: a difference inside the spread."""
        return self.rounds > 1 and self.low <= 1.0 <= self.high

    def format(self) -> str:
        """``1.23x 1.10-1.31`` (a ``~`` after it when inside the spread); one round: ``1.23x``."""
        if self.rounds <= 1:
            return f"{self.ratio:.2f}x"
        return f"{self.ratio:.2f}x {self.low:.2f}-{self.high:.2f}{' ~' if self.inside else ''}"

    def as_dict(self) -> dict:
        return {"ratio": self.ratio, "low": self.low, "high": self.high, "rounds": self.rounds,
                "inside_spread": self.inside}


def median(values: list[float]) -> float:
    """The middle value; of an even count, the mean of the two middle ones."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def spread_of(ratios: list[float]) -> Spread:
    if not ratios:
        raise ValueError("no rounds to take a spread of")
    return Spread(median(ratios), min(ratios), max(ratios), len(ratios))


def per_round(results: list[dict], key: str, name: str, loop: str, metric: str) -> dict[int, float]:
    """round -> the metric of one (row, loop) in that round; failed rounds and zeros left out."""
    out = {}
    for r in results:
        if str(r.get(key)) == name and r.get("loop") == loop and "error" not in r:
            value = r.get(metric)
            if value:
                out[int(r.get("round", 0))] = value
    return out


def paired_spread(results: list[dict], key: str, name: str, loop: str, base: str,
                  metric: str) -> Spread | None:
    """``loop``'s metric over ``base``'s, round by round (only rounds where both were measured),
    for the row ``name``; None when no round has both."""
    mine = per_round(results, key, name, loop, metric)
    theirs = per_round(results, key, name, base, metric)
    ratios = [mine[r] / theirs[r] for r in sorted(mine) if r in theirs]
    return spread_of(ratios) if ratios else None
