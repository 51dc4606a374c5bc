"""Requests: rate and latency over time, syscalls per request by name."""
from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from diag.model.live import Finding, LiveSnapshot

from ..render import series_line


class RequestsView(VerticalScroll):
    def compose(self):
        yield Static(id="requests-body")

    def show(self, snap: LiveSnapshot, findings: list[Finding]) -> None:
        r = snap.requests
        text = Text()
        text.append(f"requests ended {r.total}   in flight {r.in_flight}   "
                    f"last 10 s: p50 {r.window_p50_ms:.2f} ms  p99 {r.window_p99_ms:.2f} ms  "
                    f"max {r.window_max_ms:.2f} ms\n\n", style="bold")
        text.append(series_line("requests/s", r.rate, "req/s"))
        text.append("\n")
        text.append(series_line("latency p50", r.p50_ms, "ms"))
        text.append("\n")
        text.append(series_line("latency p99", r.p99_ms, "ms"))
        text.append("\n")
        text.append(series_line("latency max", r.max_ms, "ms"))
        text.append("\n\nsyscalls per request\n", style="bold")
        if r.syscalls_per_request:
            text.append(f"  {r.syscalls_note}\n", style="dim")
            for name, count in sorted(r.syscalls_per_request.items(), key=lambda kv: -kv[1]):
                text.append(f"  {name:<20} {count:8.2f}\n")
        else:
            text.append(f"  {r.syscalls_note or 'not available'}\n", style="yellow")
        self.query_one("#requests-body", Static).update(text)
