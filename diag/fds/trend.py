"""fd counts by kind over time, and a warning when a kind keeps growing (for the live dashboard).

The dashboard calls ``FdTrend.sample(pid)`` on its own timer (each sample is one cheap scan of
/proc/PID/fd: link targets only, no fdinfo, nothing asked of the target) and draws ``points``;
``warnings()`` names each kind whose count rose across the whole window without ever falling
back, by at least ``min_growth``. A kind that goes up and down (a connection pool breathing) is
not a leak; one that only climbs is worth a look, and ``coroscope leaks`` then says where.
"""
from __future__ import annotations

import time
from collections import deque

from diag.model.fds import FdTrendPoint, TrendWarning

from .inventory import count_kinds


class FdTrend:
    def __init__(self, window: int = 30, min_growth: int = 5, keep: int = 600):
        if window < 2:
            raise ValueError("window must hold at least 2 samples")
        self.window = window            # samples a kind must climb across to warn
        self.min_growth = min_growth    # smallest rise (last - first in the window) that warns
        self.points: deque[FdTrendPoint] = deque(maxlen=max(keep, window))

    def add(self, counts: dict[str, int], t: float | None = None) -> FdTrendPoint:
        point = FdTrendPoint(t=time.monotonic() if t is None else t, counts=dict(counts))
        self.points.append(point)
        return point

    def sample(self, pid: int) -> FdTrendPoint:
        """Count the fds of ``pid`` by kind now and add the point (raises TargetGone when it exited)."""
        return self.add(count_kinds(pid))

    def series(self, kind: str) -> list[int]:
        return [p.counts.get(kind, 0) for p in self.points]

    def kinds(self) -> list[str]:
        return sorted({k for p in self.points for k in p.counts})

    def warnings(self) -> list[TrendWarning]:
        if len(self.points) < self.window:
            return []
        recent = list(self.points)[-self.window:]
        out = []
        for kind in self.kinds():
            values = [p.counts.get(kind, 0) for p in recent]
            grew = values[-1] - values[0]
            never_fell = all(b >= a for a, b in zip(values, values[1:]))
            if never_fell and grew >= self.min_growth:
                span = recent[-1].t - recent[0].t
                out.append(TrendWarning(kind=kind, grew_by=grew, window=self.window,
                                        message=f"{kind} fds grew by {grew} over the last {self.window} samples "
                                                f"({span:.0f} s) and never fell: possible leak "
                                                f"(find where with: coroscope leaks)"))
        return out
