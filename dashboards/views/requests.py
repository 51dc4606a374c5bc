"""Requests: rate and latency over time, requests by name (route), syscalls per request by name."""
from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from diag.model.live import Finding, LiveSnapshot

from ..render import series_line

MAX_NAMES_SHOWN = 20


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
        text.append("\n\nby name\n", style="bold")
        if r.by_name:
            text.append(f"  {'name':<36} {'ended':>9} {'in flight':>9} {'p50 ms':>8} "
                        f"{'p99 ms':>8} {'max ms':>8}\n", style="dim")
            for row in r.by_name[:MAX_NAMES_SHOWN]:
                text.append(f"  {row.name[:36]:<36} {row.ended:>9,} {row.in_flight:>9} "
                            f"{row.p50_ms:>8.2f} {row.p99_ms:>8.2f} {row.max_ms:>8.2f}\n")
            if len(r.by_name) > MAX_NAMES_SHOWN:
                text.append(f"  ... and {len(r.by_name) - MAX_NAMES_SHOWN} more names\n", style="dim")
        else:
            text.append("  no named requests yet\n", style="dim")
        text.append("\nsyscalls per request\n", style="bold")
        if r.syscalls_per_request:
            text.append(f"  {r.syscalls_note}\n", style="dim")
            for name, count in sorted(r.syscalls_per_request.items(), key=lambda kv: -kv[1]):
                text.append(f"  {name:<20} {count:8.2f}\n")
        else:
            text.append(f"  {r.syscalls_note or 'not available'}\n", style="yellow")
        self.query_one("#requests-body", Static).update(text)
