"""The flame-graph report: weighted stacks, and the comparison of two of them.

A profile is a multiset of stacks, root first, each with a weight. What a weight means depends
on ``mode``: in ``cpu`` mode, samples of a thread that was on a CPU (py-spy) or microseconds of
thread CPU time (in-process sampler; ``unit`` says which); in ``wall`` mode, samples of every
thread whatever it was doing; in ``await`` mode, samples of every pending task's await chain
(one per task per sample, so a task that waited for a database call 90% of the time has 90% of
its weight under that await).

Frames are strings in py-spy's form, ``function (path:line)``, or synthetic frames in square
brackets (``[event loop]``, ``[task: name]``, ``[request: 17]``). Everything a view shows
(shares, totals, the frames that grew most) is computed here, never in a view.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

MODES = ("cpu", "wall", "await")

_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>.*):(?P<line>\d+)\)$")


def split_frame(frame: str) -> tuple[str, str | None, int | None]:
    """``"f (/x/y.py:12)"`` -> ``("f", "/x/y.py", 12)``; a synthetic frame -> ``(frame, None, None)``."""
    m = _FRAME_RE.match(frame)
    if not m:
        return frame, None, None
    return m.group("func"), m.group("file"), int(m.group("line"))


def function_of(frame: str) -> str:
    """The frame without its line number: what "the same function" means across profiles."""
    func, path, _line = split_frame(frame)
    return func if path is None else f"{func} ({path})"


@dataclass
class StackCount:
    frames: list[str]          # root first; never empty
    weight: float              # > 0
    # what the samples were taken in, where known: "task" (name), "request" (id), "thread"
    # (name or kernel tid); pprof carries them as sample labels, the graphs ignore them
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class AwaitSite:
    """Where tasks wait in the user's code (diag.flame.await_sites)."""
    site: str                 # "price (examples/shop.py:58)": the innermost frame of user code
    waits_on: str             # "sock_recv -> [future]": what it awaits, below it
    share: float              # of the waiting in user code (not ready/running, not idle), 0..1
    loop_at: str | None       # "order (examples/shop.py:95)": a frame awaiting it in a loop


@dataclass
class FlameProfile:
    mode: str                              # one of MODES
    backend: str                           # "py-spy", "sampler", "memory" (read from outside) or "file"
    unit: str                              # "samples" or "microseconds" (what a weight counts)
    stacks: list[StackCount] = field(default_factory=list)
    rate_hz: float | None = None           # sampling rate asked for
    duration_s: float | None = None        # how long the profile covers (measured)
    target: str = ""                       # "pid 123" or the command line
    by: str | None = None                  # None, "request" or "task": the roots are grouped so
    complete: bool = True                  # False: the target died or sampling stopped early
    notes: list[str] = field(default_factory=list)   # one line each, shown with the report

    # -- derived numbers (every view reads these, none computes its own) --
    def total(self) -> float:
        return sum(s.weight for s in self.stacks)

    def inclusive_share(self, func: str) -> float:
        """Fraction of the weight whose stack runs through a frame whose function name is
        ``func`` (``"f"``) or whose :func:`function_of` is ``func``; a recursive frame counts once."""
        total = self.total()
        if not total:
            return 0.0
        hit = 0.0
        for s in self.stacks:
            if any(_matches(fr, func) for fr in s.frames):
                hit += s.weight
        return hit / total

    def self_share(self, func: str) -> float:
        """Fraction of the weight whose leaf frame is ``func``."""
        total = self.total()
        if not total:
            return 0.0
        return sum(s.weight for s in self.stacks if _matches(s.frames[-1], func)) / total

    def under(self, root: str) -> "FlameProfile":
        """The part of the profile whose stacks begin with frame ``root`` (a task or request)."""
        return FlameProfile(
            mode=self.mode, backend=self.backend, unit=self.unit,
            stacks=[s for s in self.stacks if s.frames and s.frames[0] == root],
            rate_hz=self.rate_hz, duration_s=self.duration_s, target=self.target, by=self.by,
            complete=self.complete, notes=list(self.notes))

    def through(self, func: str) -> "FlameProfile":
        """The part of the profile whose stacks run through function ``func`` (a focus view)."""
        return FlameProfile(
            mode=self.mode, backend=self.backend, unit=self.unit,
            stacks=[s for s in self.stacks if any(_matches(fr, func) for fr in s.frames)],
            rate_hz=self.rate_hz, duration_s=self.duration_s, target=self.target, by=self.by,
            complete=self.complete, notes=list(self.notes))

    def roots(self) -> list[tuple[str, float]]:
        """Root frames with their weight, heaviest first (tasks or requests with ``--by``)."""
        acc: dict[str, float] = {}
        for s in self.stacks:
            acc[s.frames[0]] = acc.get(s.frames[0], 0.0) + s.weight
        return sorted(acc.items(), key=lambda kv: -kv[1])

    def function_totals(self) -> tuple[dict[str, float], dict[str, float]]:
        """(inclusive, self) weight per function (:func:`function_of`), recursion counted once."""
        incl: dict[str, float] = {}
        self_w: dict[str, float] = {}
        for s in self.stacks:
            seen = set()
            for fr in s.frames:
                fn = function_of(fr)
                if fn not in seen:
                    seen.add(fn)
                    incl[fn] = incl.get(fn, 0.0) + s.weight
            leaf = function_of(s.frames[-1])
            self_w[leaf] = self_w.get(leaf, 0.0) + s.weight
        return incl, self_w

    @classmethod
    def from_json(cls, data: dict) -> "FlameProfile":
        data = dict(data)
        data["stacks"] = [StackCount(frames=list(s["frames"]), weight=s["weight"],
                                     labels=dict(s.get("labels") or {}))
                          for s in data.get("stacks", [])]
        return cls(**data)


def _matches(frame: str, func: str) -> bool:
    if frame == func:
        return True
    name, path, _ = split_frame(frame)
    return name == func or (path is not None and f"{name} ({path})" == func)


@dataclass
class FrameChange:
    function: str            # function_of() of the frame
    base_share: float        # inclusive share in the base profile, 0..1
    new_share: float         # inclusive share in the new profile, 0..1
    base_self: float         # self share in the base profile, 0..1
    new_self: float          # self share in the new profile, 0..1

    @property
    def delta(self) -> float:
        return self.new_share - self.base_share

    @property
    def self_delta(self) -> float:
        return self.new_self - self.base_self


@dataclass
class FlameDiff:
    base: str                                   # where the base profile came from
    new: str
    base_total: float
    new_total: float
    changes: list[FrameChange] = field(default_factory=list)   # sorted: biggest inclusive growth first
    threshold_points: float | None = None       # CI gate: fail when a frame grew more than this
    failed: list[str] = field(default_factory=list)            # functions over the threshold


def compare(base: FlameProfile, new: FlameProfile, base_name: str = "base",
            new_name: str = "new", threshold_points: float | None = None) -> FlameDiff:
    """Normalise both profiles to shares and list every function's change.

    Shares, not raw weights: two runs never take the same number of samples. The list is sorted
    by the growth of the inclusive share (a function whose callees got slower grew, even when
    its own self time is nil because a shared helper is the leaf), then of the self share.
    """
    bi, bs = base.function_totals()
    ni, ns = new.function_totals()
    bt, nt = base.total() or 1.0, new.total() or 1.0
    changes = [
        FrameChange(function=fn, base_share=bi.get(fn, 0.0) / bt, new_share=ni.get(fn, 0.0) / nt,
                    base_self=bs.get(fn, 0.0) / bt, new_self=ns.get(fn, 0.0) / nt)
        for fn in set(bi) | set(ni)
    ]
    changes.sort(key=lambda c: (-c.delta, -c.self_delta, c.function))
    failed = []
    if threshold_points is not None:
        failed = [c.function for c in changes if c.delta * 100 > threshold_points]
    return FlameDiff(base=base_name, new=new_name, base_total=base.total(), new_total=new.total(),
                     changes=changes, threshold_points=threshold_points, failed=failed)
