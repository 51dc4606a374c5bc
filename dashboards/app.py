"""`coroscope top`: the Textual app. It draws snapshots; it computes nothing of its own.

Once per refresh the app asks its source (``diag.live.source``: a live process or a replay)
for a snapshot, runs the lints of ``diag.warnings`` on it, hands both to the views, and, when
recording, appends the snapshot to the recording. Between refreshes the ring is read every
``PUMP_S`` (a loaded target fills the ring in well under a second); pausing freezes the screen,
not the reading, so a pause loses no records. All state the views show lives in the snapshot,
so a replay draws the same screens.

Only the view on screen is drawn at a refresh; another is drawn from the current snapshot
when it is brought up. Drawing is most of what the dashboard costs the machine once reading is
budgeted (Textual measures, lays out and renders every widget whose content changed), and on
a small machine that CPU is taken from the target.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from diag.errors import CoroscopeError
from diag.live.recording import Recorder
from diag.live.source import ReplaySource, Source
from diag.model.live import Finding, LiveSnapshot
from diag.warnings import check

from .views.fds import FdsView
from .views.help import HelpScreen
from .views.hot import HotView
from .views.loop import LoopView
from .views.requests import RequestsView
from .views.tasks import TasksView
from .views.warnings_view import WarningsView

PUMP_S = 0.05      # how often the ring is read between refreshes (see LiveSource.pump)

# pane id -> (title, view class); the digit keys follow this order
VIEWS = {
    "tasks": ("Tasks", TasksView),
    "warnings": ("Warnings", WarningsView),
    "requests": ("Requests", RequestsView),
    "fds": ("Fds", FdsView),
    "hot": ("Hot paths", HotView),
    "loop": ("Loop", LoopView),
}


class DashboardApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "coroscope top"
    BINDINGS = [
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
        Binding("p", "toggle_pause", "pause/resume"),
        Binding("r", "toggle_record", "record"),
        Binding("ctrl+r", "refresh_now", "refresh now"),
        Binding("s", "sort", "sort tasks by next column"),
        Binding("S", "sort_reverse", "reverse task sort"),
        Binding("slash", "filter", "filter tasks"),
        Binding("w", "next_worker", "next worker (pre-fork services)"),
        Binding("escape", "clear_filter", "clear the task filter", show=False),
        Binding("left_square_bracket", "step(-1)", "replay: previous snapshot", show=False),
        Binding("right_square_bracket", "step(1)", "replay: next snapshot", show=False),
        *[Binding(str(i), f"view('{pane}')", f"view {title}", show=False)
          for i, (pane, (title, _)) in enumerate(VIEWS.items(), start=1)],
    ]

    def __init__(self, source: Source, refresh_s: float = 1.0, record_path: str | None = None,
                 auto_refresh: bool = True):
        super().__init__()
        self.source = source
        self.refresh_s = refresh_s
        self.poll_automatically = auto_refresh
        self.record_path = record_path
        self.recorder: Recorder | None = None
        self.paused = False
        self.snapshot: LiveSnapshot | None = None
        self.findings: list[Finding] = []
        self.refreshes = 0
        self._drawn: dict[str, LiveSnapshot] = {}    # pane -> the snapshot it shows

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with TabbedContent(initial="tasks", id="views"):
            for pane, (title, view) in VIEWS.items():
                with TabPane(title, id=pane):
                    yield view(id=f"{pane}-view", classes="view")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#task-table", DataTable).focus()
        self.refresh_data()
        if self.record_path:
            self.action_toggle_record()
        if self.poll_automatically:
            self.set_interval(self.refresh_s, self.refresh_data)
            if hasattr(self.source, "pump"):
                self.set_interval(PUMP_S, self.pump)

    # -- data ------------------------------------------------------------------------------

    def pump(self) -> None:
        # keeps reading the ring while paused too: a pause must not turn into lost records
        if not self.source.ended:
            self.source.pump()

    def refresh_data(self, force: bool = False) -> None:
        if self.paused and not force:
            return
        if self.snapshot is not None and self.source.ended and not force:
            return        # the target is gone or the replay is over: keep what we show
        self.show(self.source.poll())

    def show(self, snap: LiveSnapshot) -> None:
        self.snapshot = snap
        self.findings = check(snap)
        self.refreshes += 1
        if self.recorder is not None:
            try:
                self.recorder.add(snap)
            except OSError as exc:      # disk full, file removed: stop recording, keep watching
                self.recorder = None
                self.notify(f"recording stopped: {exc.strerror}", severity="error")
        self._draw(self.query_one(TabbedContent).active)
        self._status()

    def _draw(self, pane: str, again: bool = False) -> None:
        """Draw the current snapshot in ``pane``'s view, unless it shows it already."""
        if self.snapshot is None or pane not in VIEWS:
            return
        if again or self._drawn.get(pane) is not self.snapshot:
            self.query_one(f"#{pane}-view").show(self.snapshot, self.findings)
            self._drawn[pane] = self.snapshot

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._draw(event.pane.id)

    def _status(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        t = snap.target
        text = Text()
        text.append(f" pid {t.pid} ", style="bold reverse")
        text.append(f" {t.command[:40]}  loop: {t.loop}  source: {snap.source}  ")
        if not t.alive:
            text.append(f" {t.note} ", style="bold white on red")
        text.append(f"  tasks {sum(1 for x in snap.tasks if x.state not in ('done', 'unknown'))}")
        text.append(f"  records {snap.records}")
        if snap.skipped_records:       # passed unread to keep the dashboard's CPU bounded
            text.append(f"  skipped {snap.skipped_records}", style="yellow")
        if snap.lost_records:
            text.append(f"  lost {snap.lost_records}", style="bold red")
        text.append(f"  warnings {len(self.findings)}",
                    style="bold red" if self.findings else "green")
        if self.paused:
            text.append("  PAUSED", style="bold black on yellow")
        if self.recorder is not None:
            text.append(f"  REC {self.recorder.path.name} ({self.recorder.count})",
                        style="bold white on red")
        self.query_one("#status", Static).update(text, layout=False)     # always one line

    # -- actions ---------------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen(list(self.BINDINGS)))

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self._status()

    def action_refresh_now(self) -> None:
        self.refresh_data(force=True)

    def action_toggle_record(self) -> None:
        if self.recorder is not None:
            path = self.recorder.close()
            count = self.recorder.count
            self.recorder = None
            self.notify(f"recorded {count} snapshots to {path}")
        elif isinstance(self.source, ReplaySource):
            self.notify("this is a replay already; nothing to record", severity="warning")
            return
        else:
            pid = self.snapshot.target.pid if self.snapshot else 0
            path = self.record_path or f"coroscope-top-{pid}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
            try:
                self.recorder = Recorder(Path(path), pid=pid,
                                         command=self.snapshot.target.command if self.snapshot else "")
            except CoroscopeError as exc:
                self.notify(str(exc), severity="error")
                return
            if self.snapshot is not None:
                self.recorder.add(self.snapshot)
            self.notify(f"recording to {path}; r stops")
        self._status()

    def action_next_worker(self) -> None:
        next_worker = getattr(self.source, "next_worker", None)
        if next_worker is None:
            self.notify("this process has no workers to switch between")
            return
        next_worker()
        self.refresh_data(force=True)

    def action_sort(self) -> None:
        self.query_one(TasksView).cycle_sort()
        self._redraw()

    def action_sort_reverse(self) -> None:
        self.query_one(TasksView).cycle_sort(reverse=True)
        self._redraw()

    def action_filter(self) -> None:
        self.query_one(TabbedContent).active = "tasks"
        box = self.query_one("#task-filter", Input)
        box.display = True      # hidden unless filtering, so it never swallows the keys
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#task-filter", Input)
        box.value = ""
        self._close_filter("")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "task-filter":
            self._close_filter(event.value.strip())

    def _close_filter(self, text: str) -> None:
        self.query_one("#task-filter", Input).display = False
        self.query_one(TasksView).filter_text = text
        self.query_one("#task-table", DataTable).focus()
        self._redraw()

    def action_step(self, delta: int) -> None:
        if isinstance(self.source, ReplaySource):
            self.paused = True
            self.show(self.source.step(delta))

    def action_view(self, pane: str) -> None:
        self.query_one(TabbedContent).active = pane
        self._draw(pane)
        tables = self.query_one(f"#{pane}-view").query(DataTable)
        if tables:
            tables.first().focus()      # so the arrow keys move through what is shown

    def _redraw(self) -> None:
        """The tasks' sort or filter changed: draw again what is on screen."""
        self._drawn.pop("tasks", None)
        self._draw(self.query_one(TabbedContent).active, again=True)

    def on_unmount(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        self.source.close()
