"""The warnings: every finding of diag.warnings against the current snapshot, with evidence."""
from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from diag.model.live import Finding, LiveSnapshot
from diag.warnings import LINTS


class WarningsView(VerticalScroll):
    def compose(self):
        yield Static(id="warnings-body")

    def show(self, snap: LiveSnapshot, findings: list[Finding]) -> None:
        text = Text()
        if not findings:
            text.append("no warnings\n", style="green")
        for f in findings:
            style = "bold red" if f.severity == "error" else "bold yellow"
            text.append(f"{f.severity.upper():<8}", style=style)
            text.append(f"[{f.lint}] ", style="bold")
            text.append(f"{f.subject}: {f.message}\n")
            for line in f.evidence:
                text.append(f"          {line}\n", style="dim")
        text.append("\nlints: ", style="bold")
        text.append(", ".join(f"{lint.name} ({lint.summary})" for lint in LINTS.values()))
        text.append("\n")
        for missing in snap.missing:
            text.append(f"not available: {missing}\n", style="yellow")
        self.query_one("#warnings-body", Static).update(text)
        self.border_title = f"warnings: {len(findings)}"
