"""Differential flame graphs: the new profile's shape, coloured by how each frame changed.

Two runs never take the same number of samples, so both profiles are normalised to shares
first. The graph is drawn from the NEW profile (that is what the code does now); each frame is
coloured by the change of its inclusive share along the same path, red where it grew and blue
where it shrank, deeper colour for bigger change (Brendan Gregg's differential flame graphs).
Frames are compared without their line numbers, so an edit between the runs that moves code
down a few lines does not make every path look new.
Paths that vanished have no frame in the new graph; they show in the list, which ranks
functions by how much their inclusive share grew, for CI (``--threshold POINTS``).
"""
from __future__ import annotations

from dataclasses import replace

from diag.model.flame import FlameDiff, FlameProfile, StackCount, compare, function_of

from .formats import build_tree, render_html, render_svg


def path_deltas(base: FlameProfile, new: FlameProfile) -> dict[tuple[str, ...], float]:
    """path (root first) -> change of its inclusive share, in percentage points."""
    def shares(profile: FlameProfile) -> dict[tuple[str, ...], float]:
        root = build_tree(profile.stacks)
        total = root.value or 1.0
        out: dict[tuple[str, ...], float] = {}
        todo = [((), root)]
        while todo:
            path, node = todo.pop()
            for name, child in node.children.items():
                p = path + (name,)
                out[p] = 100.0 * child.value / total
                todo.append((p, child))
        return out

    b, n = shares(base), shares(new)
    return {p: n.get(p, 0.0) - b.get(p, 0.0) for p in set(b) | set(n)}


def diff_profiles(base: FlameProfile, new: FlameProfile, base_name: str, new_name: str,
                  threshold_points: float | None = None) -> FlameDiff:
    return compare(base, new, base_name, new_name, threshold_points)


def without_lines(profile: FlameProfile) -> FlameProfile:
    """The profile with ``f (path:12)`` turned into ``f (path)``: an edit that shifts lines
    between the two runs must not make every path look new."""
    acc: dict[tuple[str, ...], float] = {}
    for st in profile.stacks:
        key = tuple(function_of(fr) for fr in st.frames)
        acc[key] = acc.get(key, 0.0) + st.weight
    return replace(profile, stacks=[StackCount(list(k), w) for k, w in acc.items()])


def render_diff(base: FlameProfile, new: FlameProfile, fmt: str, title: str) -> str:
    base, new = without_lines(base), without_lines(new)
    deltas = path_deltas(base, new)
    if fmt == "svg":
        return render_svg(new, title=title, diff_deltas=deltas)
    return render_html(new, title=title, diff_deltas=deltas)


def format_table(d: FlameDiff, limit: int = 15) -> str:
    """The frames that grew most, as text (shares in percentage points)."""
    lines = [f"{'incl Δ':>8} {'self Δ':>8} {'incl now':>9}  function",
             f"{'-' * 8} {'-' * 8} {'-' * 9}  {'-' * 40}"]
    for c in d.changes[:limit]:
        lines.append(f"{100 * c.delta:+8.2f} {100 * c.self_delta:+8.2f} {100 * c.new_share:8.2f}%  "
                     f"{c.function}")
    if d.threshold_points is not None:
        verdict = (f"FAIL: {len(d.failed)} function(s) grew more than {d.threshold_points:g} points"
                   if d.failed else f"ok: no function grew more than {d.threshold_points:g} points")
        lines.append(verdict)
    return "\n".join(lines)
