"""fds: counts by kind with their trend, the leak warning, the opening stack of a selected fd."""
from __future__ import annotations

from rich.text import Text
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from diag.model.live import Finding, FdRow, LiveSnapshot

from ..render import spark


MAX_ROWS = 1000


class FdsView(Vertical):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.selected_fd: int | None = None
        self._rows: dict[int, FdRow] = {}

    def compose(self):
        yield Static(id="fd-summary")
        table = DataTable(id="fd-table", cursor_type="row", zebra_stripes=True)
        table.add_column("fd", key="fd")
        table.add_column("kind", key="kind")
        table.add_column("task", key="task")
        table.add_column("detail", key="detail")
        yield table
        yield Static(id="fd-stack")

    def show(self, snap: LiveSnapshot, findings: list[Finding]) -> None:
        fds = snap.fds
        text = Text()
        for f in findings:
            if f.lint == "fd-leak":
                text.append(f"LEAK {f.message}\n", style="bold red")
                for line in f.evidence:
                    text.append(f"     {line}\n", style="red")
        if fds.note:
            text.append(fds.note + "\n", style="yellow")
        text.append(f"{'kind':<10}{'open':>6}  trend (one point per refresh)   source: "
                    f"{fds.source or '-'}"
                    + (f"   (first {MAX_ROWS} of {len(fds.open)} listed)" if len(fds.open) > MAX_ROWS else "")
                    + "\n", style="bold")
        for kind, count in fds.by_kind.items():
            text.append(f"{kind:<10}{count:>6}  {spark([float(v) for v in fds.trend.get(kind, [])], 40)}\n")
        self.query_one("#fd-summary", Static).update(text)
        table = self.query_one(DataTable)
        table.clear()
        shown = fds.open[:MAX_ROWS]
        self._rows = {r.fd: r for r in shown}
        for r in shown:
            table.add_row(str(r.fd), r.kind, str(r.task_id or "-"), Text(r.detail[:60]), key=str(r.fd))
        if self.selected_fd in self._rows:
            table.move_cursor(row=table.get_row_index(str(self.selected_fd)), animate=False)
        self._stack()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.selected_fd = int(event.row_key.value)
            self._stack()

    def _stack(self) -> None:
        row = self._rows.get(self.selected_fd) if self.selected_fd is not None else None
        body = self.query_one("#fd-stack", Static)
        if row is None:
            body.update("select an fd to see the stack that opened it")
            return
        text = Text(f"fd {row.fd} ({row.kind}) opened by ", style="bold")
        text.append(f"task {row.task_id}\n" if row.task_id else "unknown task\n")
        if row.stack:
            for frame in row.stack:
                text.append(f"  {frame}\n")
        else:
            text.append("  opening stack unknown (opened before tracing, or not by a traced call)\n",
                        style="dim")
        body.update(text)
