"""Text views of the fd inventory and of leak reports (the model is in diag/model/fds.py)."""
from __future__ import annotations

import os

from diag.model.fds import Inventory, LeakReport


def _short(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_inventory(inv: Inventory, *, stacks: bool = False, width: int = 120) -> str:
    lines = []
    counts = inv.counts_by_kind()
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    lines.append(f"pid {inv.pid}: {len(inv.rows)} fds ({summary or 'none'}) "
                 f"read in {inv.elapsed_s * 1000:.1f} ms; opening stacks: {inv.stacks}")
    lines.append(f"{'FD':>5}  {'KIND':<8}  {'DETAIL':<48}  OPENED AT")
    for row in inv.rows:
        where = ""
        if row.origin is not None and row.origin.site is not None:
            site = row.origin.site
            where = f"{_short(site.file)}:{site.line} in {site.function}"
            if row.origin.task:
                where += f" [task {row.origin.task}]"
            if row.origin.request:
                where += f" [request {row.origin.request}]"
        lines.append(f"{row.fd:>5}  {row.kind:<8}  {_clip(row.detail or row.target, 48):<48}  {where}".rstrip())
        if stacks and row.origin is not None:
            for frame in row.origin.stack[:12]:
                lines.append(f"{'':>17}{_short(frame.file)}:{frame.line} in {frame.function}")
    for notice in inv.notices:
        lines.append(f"notice: {notice}")
    return "\n".join(lines) + "\n"


def render_leaks(report: LeakReport) -> str:
    lines = [f"{report.target}: {report.cycles} cycles after {report.warmup} warm-up "
             f"({report.mode} mode, {report.elapsed_s:.2f} s)"]
    if report.leaks:
        lines.append(f"LEAKS ({len(report.leaks)} kind{'s' if len(report.leaks) != 1 else ''}):")
        for leak in report.leaks:
            lines.append(f"  {leak.message}")
            if leak.opened_at:
                site = leak.opened_at[0]
                stack = site.stack
                # from the site outwards: the stdlib frames inside it say little
                start = next((i for i, f in enumerate(stack) if (f.file, f.line) == (site.file, site.line)), 0)
                for frame in stack[start:start + 6]:
                    lines.append(f"      {frame.file}:{frame.line} in {frame.function}")
            for example in leak.examples[:3]:
                lines.append(f"    e.g. {example}")
    else:
        lines.append("no leaks: nothing grew per cycle")
    grown = {k: v for k, v in report.per_cycle.items() if v}
    if grown:
        lines.append("per cycle: " + ", ".join(f"{k} {v:+g}" for k, v in sorted(grown.items())))
    if report.retries:
        lines.append(f"(final sample retaken {report.retries} times while waiting for resources to close)")
    for notice in report.notices:
        lines.append(f"notice: {notice}")
    return "\n".join(lines) + "\n"
