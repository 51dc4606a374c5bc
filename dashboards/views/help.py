"""The help screen on `?`: every key binding of the app, from its BINDINGS."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static


_KEY_NAMES = {"question_mark": "?", "slash": "/", "left_square_bracket": "[",
              "right_square_bracket": "]", "escape": "esc"}


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close help")]

    def __init__(self, bindings: list[Binding]):
        super().__init__()
        self.bindings_shown = bindings

    def compose(self) -> ComposeResult:
        text = Text("coroscope top: keys\n\n", style="bold")
        for b in self.bindings_shown:
            keys = ", ".join(_KEY_NAMES.get(k.strip(), k.strip()) for k in b.key.split(","))
            text.append(f"  {keys:<22}", style="bold cyan")
            text.append(f"{b.description}\n")
        text.append("\n  escape or ? closes this help\n", style="dim")
        yield Static(text, id="help-body")
