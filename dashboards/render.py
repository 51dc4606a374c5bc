"""Text helpers the views share: durations, sparklines, bar histograms, a terminal flame graph.

Pure functions of their arguments (no clock, no terminal queries) so that a snapshot always
draws the same screen, which the snapshot tests rely on.
"""
from __future__ import annotations

import os

from rich.text import Text

from diag.model.live import Series

_BLOCKS = " ▁▂▃▄▅▆▇█"


def duration(ns: int) -> str:
    if ns <= 0:
        return "0"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f}us"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f}ms"
    if ns < 60_000_000_000:
        return f"{ns / 1e9:.2f}s"
    return f"{ns / 6e10:.1f}m"


def short_location(location: str) -> str:
    """file:line relative to the working directory when under it, else its last two parts."""
    if not location:
        return "?"
    cwd = os.getcwd() + os.sep
    if location.startswith(cwd):
        return location[len(cwd):]
    parts = location.split(os.sep)
    return os.sep.join(parts[-2:]) if len(parts) > 2 else location


def spark(values: list[float], width: int = 60) -> str:
    """The last ``width`` values as block characters scaled to their own maximum."""
    values = values[-width:]
    if not values:
        return "(no data yet)"
    top = max(values)
    if top <= 0:
        return _BLOCKS[1] * len(values)
    return "".join(_BLOCKS[1 + min(7, int(7 * v / top))] if v > 0 else _BLOCKS[1] for v in values)


def series_line(label: str, series: Series, unit: str, width: int = 60) -> Text:
    values = series.values
    last = values[-1] if values else 0.0
    peak = max(values) if values else 0.0
    text = Text()
    text.append(f"{label:<22}", style="bold")
    text.append(f"{last:>10.1f} {unit:<6}", style="cyan")
    text.append(f" max {peak:>9.1f}  ")
    text.append(spark(values, width), style="green")
    return text


def bars(labels: tuple[str, ...] | list[str], counts: list[int], width: int = 40) -> Text:
    top = max(counts) if counts else 0
    text = Text()
    for label, count in zip(labels, counts):
        n = 0 if top == 0 else max(1 if count else 0, round(width * count / top))
        text.append(f"{label:>8} ")
        text.append("█" * n, style="magenta")
        text.append(f" {count}\n")
    return text


def flame(folded: dict[str, int], width: int = 100, depth: int = 12) -> Text:
    """An icicle graph: the root on top, each frame as wide as its share of the samples."""
    total = sum(folded.values())
    if total == 0:
        return Text("(no samples)")
    tree: dict = {}
    for stack, count in folded.items():
        node = tree
        for frame in stack.split(";"):
            entry = node.setdefault(frame, [0, {}])
            entry[0] += count
            node = entry[1]
    text = Text()
    level = [(frame, entry, 0) for frame, entry in sorted(tree.items(), key=lambda kv: -kv[1][0])]
    styles = ("on dark_red", "on red3", "on dark_orange3", "on orange3")
    for row in range(depth):
        if not level:
            break
        line = Text()
        column = 0
        next_level = []
        for i, (frame, (count, children), start) in enumerate(level):
            begin = max(start, column)
            cells = int(width * count / total)
            if cells < 1:
                continue
            if begin > column:
                line.append(" " * (begin - column))
            label = frame[: cells - 1].ljust(cells - 1) + "│" if cells > 1 else "│"
            line.append(label, style=styles[(row + i) % len(styles)])
            child_start = begin
            for cframe, centry in sorted(children.items(), key=lambda kv: -kv[1][0]):
                next_level.append((cframe, centry, child_start))
                child_start += int(width * centry[0] / total)
            column = begin + cells
        text.append(line)
        text.append("\n")
        level = next_level
    return text
