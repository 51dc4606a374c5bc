"""Hot paths: the top functions from the sampler, and a flame graph drawn in the terminal."""
from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from diag.model.live import Finding, LiveSnapshot

from ..render import flame


class HotView(VerticalScroll):
    def compose(self):
        yield Static(id="hot-body")

    def show(self, snap: LiveSnapshot, findings: list[Finding]) -> None:
        hot = snap.hot
        text = Text()
        if not hot.top and not hot.folded:
            text.append(hot.note or "not available: no sampler attached", style="yellow")
            self.query_one("#hot-body", Static).update(text)
            return
        text.append(f"{hot.samples} samples from {hot.source}\n", style="bold")
        text.append(f"{'self %':>7} {'total %':>8}  function\n", style="bold")
        total = max(1, hot.samples)
        for h in hot.top[:15]:
            text.append(f"{100 * h.self_samples / total:7.1f} {100 * h.total_samples / total:8.1f}  "
                        f"{h.function}\n")
        text.append("\n")
        width = max(40, (self.size.width or 100) - 4)
        text.append(flame(hot.folded, width=min(width, 160)))
        self.query_one("#hot-body", Static).update(text)
