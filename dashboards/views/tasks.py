"""The task table (sortable, filterable) and the detail of the highlighted task."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Static

from diag.model.live import STEP_BUCKET_LABELS, Finding, LiveSnapshot, TaskRow

from ..render import bars, duration, short_location

# column key -> (label, sort key)
COLUMNS: dict[str, tuple[str, object]] = {
    "id": ("ID", lambda t: t.id),
    "name": ("Name", lambda t: t.name),
    "state": ("State", lambda t: t.state),
    "polls": ("Polls", lambda t: t.polls),
    "busy": ("Busy", lambda t: t.busy_ns),
    "sched": ("Sched", lambda t: t.scheduled_ns),
    "idle": ("Idle", lambda t: t.idle_ns),
    "location": ("Location", lambda t: t.location),
    "age": ("Age", lambda t: t.age_ns),
}
MAX_ROWS = 1000
_STATE_STYLE = {"running": "bold green", "scheduled": "yellow", "idle": "", "done": "dim"}


def display_name(task: TaskRow) -> str:
    """asyncio's default names say nothing: show the coroutine beside them."""
    if task.name.startswith("Task-") and task.coro:
        return f"{task.name} {task.coro}"
    return task.name


def matches(task: TaskRow, needle: str) -> bool:
    needle = needle.lower()
    return not needle or any(needle in s.lower() for s in
                             (str(task.id), task.name, task.state, task.location, task.coro))


class TasksView(Vertical):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.sort_column = "id"
        self.sort_reverse = False
        self.filter_text = ""
        self.selected_id: int | None = None
        self._tasks: dict[int, TaskRow] = {}

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter tasks (id, name, state, location); Enter to apply",
                    id="task-filter")
        table = DataTable(id="task-table", cursor_type="row", zebra_stripes=True)
        for key, (label, _) in COLUMNS.items():
            table.add_column(label, key=key)
        yield table
        with Horizontal(id="task-detail-row"):
            yield Static(id="task-detail")
            yield Static(id="task-histogram")

    def cycle_sort(self, reverse: bool = False) -> None:
        if reverse:
            self.sort_reverse = not self.sort_reverse
        else:
            keys = list(COLUMNS)
            self.sort_column = keys[(keys.index(self.sort_column) + 1) % len(keys)]

    def visible_tasks(self, snap: LiveSnapshot) -> list[TaskRow]:
        key = COLUMNS[self.sort_column][1]
        rows = [t for t in snap.tasks if matches(t, self.filter_text)]
        return sorted(rows, key=key, reverse=self.sort_reverse)

    def show(self, snap: LiveSnapshot, findings: list[Finding]) -> None:
        table = self.query_one(DataTable)
        matching = self.visible_tasks(snap)
        rows = matching[:MAX_ROWS]          # a table of 10,000 rows redrawn each second is no view
        self._tasks = {t.id: t for t in rows}
        keep = self.selected_id
        table.clear()
        # a source without wake records cannot know the scheduled delay: "-", not a false 0
        sched_known = not any(m.startswith("scheduled delay") for m in snap.missing)
        for t in rows:
            table.add_row(
                str(t.id), Text(display_name(t)), Text(t.state, style=_STATE_STYLE[t.state]), str(t.polls),
                duration(t.busy_ns), duration(t.scheduled_ns) if sched_known else "-", duration(t.idle_ns),
                Text(short_location(t.location)), duration(t.age_ns), key=str(t.id))
        if keep in self._tasks:
            table.move_cursor(row=table.get_row_index(str(keep)), animate=False)
        elif rows:
            self.selected_id = rows[0].id
        self.border_title = (f"tasks: {len(rows)} shown of {len(matching)} matching, {len(snap.tasks)} in all"
                             + (f"  filter: {self.filter_text!r}" if self.filter_text else "")
                             + f"  sort: {self.sort_column} {'▼' if self.sort_reverse else '▲'}")
        self._detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.selected_id = int(event.row_key.value)
            self._detail()

    def _detail(self) -> None:
        detail = self.query_one("#task-detail", Static)
        histogram = self.query_one("#task-histogram", Static)
        task = self._tasks.get(self.selected_id) if self.selected_id is not None else None
        if task is None:
            detail.update("no task selected")
            histogram.update("")
            return
        text = Text()
        text.append(f"task {task.id} {task.name}\n", style="bold")
        text.append(f"coro        {task.coro or '?'}\n")
        text.append(f"created at  {task.location or '?'}  (parent task {task.parent_id or '-'})\n")
        text.append(f"state       {task.state}" + (f" ({task.outcome})" if task.outcome else "") + "\n")
        text.append(f"awaiting    {task.awaiting or '?'}\n")
        text.append(f"wakes       {task.wakes}, self-wakes {task.self_wakes}\n")
        if task.await_chain:
            text.append("await chain:\n", style="bold")
            for frame in task.await_chain:
                text.append(f"  {frame}\n")
        detail.update(text)
        hist = Text("step times\n", style="bold")
        hist.append(bars(STEP_BUCKET_LABELS, task.step_histogram, width=30))
        histogram.update(hist)
