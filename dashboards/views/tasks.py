"""The task table (sortable, filterable) and the detail of the highlighted task.

The table is changed in place from one refresh to the next where it can be: rows of tasks no
longer shown are removed, changed cells updated, new rows appended. Textual's DataTable
measures every cell of every row added, and a table rebuilt each second for a few hundred
tasks was a tenth of a core. In the usual order (by id, ascending) new tasks have the largest
ids, so they go at the end and the table is only ever rebuilt when the order itself changed.
"""
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
    "awaiting": ("Awaiting", lambda t: t.awaiting),
}
AWAITING_WIDTH = 48     # the column's cell, cut: the detail panel has the whole text
MAX_ROWS = 1000
MAX_REMOVALS = 200      # each removal renumbers every row: past this many, rebuild instead
_STATE_STYLE = {"running": "bold green", "scheduled": "yellow", "idle": "", "done": "dim",
                "unknown": "italic"}


def display_name(task: TaskRow) -> str:
    """asyncio's default names say nothing: show the coroutine beside them."""
    if task.name.startswith("Task-") and task.coro:
        return f"{task.name} {task.coro}"
    return task.name


def _cells(t: TaskRow, sched_known: bool) -> tuple:
    """The cells of a task's row, one per column of COLUMNS."""
    return (str(t.id), Text(display_name(t)), Text(t.state, style=_STATE_STYLE[t.state]), str(t.polls),
            duration(t.busy_ns), duration(t.scheduled_ns) if sched_known else "-", duration(t.idle_ns),
            Text(short_location(t.location)), duration(t.age_ns), Text(_cut(t.awaiting or "?")))


def _cut(text: str, width: int = AWAITING_WIDTH) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _width(cell) -> int:
    return cell.cell_len if isinstance(cell, Text) else len(cell)


def matches(task: TaskRow, needle: str) -> bool:
    needle = needle.lower()
    return not needle or any(needle in s.lower() for s in
                             (str(task.id), task.name, task.state, task.location, task.coro,
                              task.awaiting))


class TasksView(Vertical):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.sort_column = "id"
        self.sort_reverse = False
        self.filter_text = ""
        self.selected_id: int | None = None
        self._tasks: dict[int, TaskRow] = {}
        self._shown: dict[str, tuple] = {}     # row key -> its cells, in table order
        self._detail_lines = -1                  # lines in the task detail now
        self._taken_ns = 0
        self._awaits_note = ""
        self._widths = [len(label) for label, _ in COLUMNS.values()]   # widest cell so far

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter tasks (id, name, state, location, awaiting); Enter to apply",
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
        self._taken_ns = snap.taken_ns
        self._awaits_note = snap.awaits_note
        keep = self.selected_id
        # a source without wake records cannot know the scheduled delay: "-", not a false 0
        sched_known = not any(m.startswith("scheduled delay") for m in snap.missing)
        wanted = {str(t.id): _cells(t, sched_known) for t in rows}
        self._update_table(table, wanted)
        if keep in self._tasks:
            row = table.get_row_index(str(keep))
            if row != table.cursor_row:          # moving it scrolls: a redraw of its own
                table.move_cursor(row=row, animate=False)
        elif rows:
            self.selected_id = rows[0].id
        self.border_title = (f"tasks: {len(rows)} shown of {len(matching)} matching, {len(snap.tasks)} in all"
                             + (f"  filter: {self.filter_text!r}" if self.filter_text else "")
                             + f"  sort: {self.sort_column} {'▼' if self.sort_reverse else '▲'}")
        self._detail()

    def _update_table(self, table: DataTable, wanted: dict[str, tuple]) -> None:
        """Make the table show ``wanted`` (row key -> cells, in order), in place when the rows
        that stay keep their order and the new ones all come after them."""
        shown = self._shown
        staying = [key for key in shown if key in wanted]
        arriving = [key for key in wanted if key not in shown]
        if list(wanted) != staying + arriving or len(shown) - len(staying) > MAX_REMOVALS:
            table.clear()
            self._widths = [len(label) for label, _ in COLUMNS.values()]
            arriving = list(wanted)
        else:
            for key in shown:
                if key not in wanted:
                    table.remove_row(key)
            widths = self._widths
            for key in staying:
                for i, (column, old, new) in enumerate(zip(COLUMNS, shown[key], wanted[key])):
                    if old != new:
                        # A cell that asks for a width update and is narrower than its column
                        # makes DataTable measure the whole column again: ask only when it
                        # widens the column (columns never narrow while the table lives).
                        width = _width(new)
                        table.update_cell(key, column, new, update_width=width > widths[i])
                        widths[i] = max(widths[i], width)
        for key in arriving:
            cells = wanted[key]
            table.add_row(*cells, key=key)
            self._widths = [max(w, _width(c)) for w, c in zip(self._widths, cells)]
        self._shown = wanted

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
            self._detail_lines = -1
            return
        text = Text()
        text.append(f"task {task.id} {task.name}\n", style="bold")
        text.append(f"coro        {task.coro or '?'}\n")
        text.append(f"created at  {task.location or '?'}  (parent task {task.parent_id or '-'})\n")
        text.append(f"state       {task.state}" + (f" ({task.outcome})" if task.outcome else "") + "\n")
        text.append(f"awaiting    {task.awaiting or '?'}")
        if task.awaiting_read_ns:
            age = max(0, self._taken_ns - task.awaiting_read_ns)
            text.append(f"  (read from memory {duration(age)} ago)", style="dim")
        text.append("\n")
        text.append(f"wakes       {task.wakes}, self-wakes {task.self_wakes}\n")
        if task.await_chain:
            text.append("await chain:\n", style="bold")
            for frame in task.await_chain:
                text.append(f"  {frame}\n")
            text.append(f"  -> {task.awaiting}\n")
        if self._awaits_note:
            text.append(f"chains read {self._awaits_note}\n", style="dim")
        # a layout pass (the whole screen) only when the detail's height changes
        lines = text.plain.count("\n")
        detail.update(text, layout=lines != self._detail_lines)
        self._detail_lines = lines
        hist = Text("step times\n", style="bold")
        hist.append(bars(STEP_BUCKET_LABELS, task.step_histogram, width=30))
        histogram.update(hist, layout=False)      # one line per bucket, always
