"""The event loop: iterations per second, time blocked in poll, ready queue, scheduling lag."""
from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from diag.model.live import Finding, LiveSnapshot

from ..render import series_line


# the entries of snapshot.missing this view speaks for
LOOP_GAPS = ("loop", "scheduling lag", "wakeup delay", "slow callbacks")


class LoopView(VerticalScroll):
    def compose(self):
        yield Static(id="loop-body")

    def show(self, snap: LiveSnapshot, findings: list[Finding]) -> None:
        lp = snap.loop
        text = Text()
        text.append(f"loop: {snap.target.loop}   iterations seen {lp.iterations}\n\n", style="bold")
        notes = [m for m in snap.missing if m.split(":")[0] in LOOP_GAPS]
        if lp.iterations == 0 and not any(m.startswith("loop:") for m in notes):
            notes.append("loop: no loop-iteration records yet")
        for note in notes:
            text.append(f"not available: {note}\n", style="yellow")
        if notes:
            text.append("\n")
        text.append(series_line("iterations/s", lp.iterations_per_s, "/s"))
        text.append("\n")
        text.append(series_line("blocked in poll", lp.poll_blocked_ms_per_s, "ms/s"))
        text.append("\n")
        text.append(series_line("ready per iteration", lp.ready_mean, ""))
        text.append("\n")
        text.append(series_line("sched lag p99", lp.sched_lag_p99_ms, "ms"))
        text.append("\n")
        self.query_one("#loop-body", Static).update(text)
