"""The syscalls report in the terminal (rich). Draws the model; computes nothing of its own."""
from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..model.syscalls import SyscallReport

SEQUENCE_SHOWN = 24   # calls of a request's sequence shown in the table


def _num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _sequence(names: list[str], truncated: bool, calls: int) -> str:
    shown = names[:SEQUENCE_SHOWN]
    text = " ".join(shown)
    if len(names) > len(shown) or truncated:
        text += f" … ({calls} calls)"
    return text


def report_renderable(report: SyscallReport) -> Group:
    parts = []
    head = Text()
    head.append("coroscope syscalls", style="bold")
    head.append(f" · {report.target} · backend {report.backend} · by {report.by} · "
                f"{report.duration_s:.1f} s · {report.requests} requests")
    if report.loop:
        head.append(f" · loop {report.loop}")
    parts.append(head)

    summary = Text()
    if report.per_request is not None:
        t = report.per_request.total
        summary.append(f"per request: {t.mean:.2f} syscalls direct (p50 {t.p50:g}, p99 {t.p99:g}, max {t.max})",
                       style="bold cyan")
        summary.append(" · ")
    if report.amortized_per_request is not None:
        summary.append(f"{report.amortized_per_request:.2f} amortized (every call / requests)")
        if report.steady_per_request != report.amortized_per_request:
            summary.append(f", {report.steady_per_request:.2f} without start-up")
        summary.append(" · ")
    summary.append(f"{report.total_calls} calls in all, {report.loop_calls} in the loop bucket")
    if report.unattributed_calls:
        summary.append(f", {report.unattributed_calls} unattributed")
    parts.append(summary)

    table = Table(title="syscalls", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("syscall", no_wrap=True)
    table.add_column("calls", justify="right")
    table.add_column("/req", justify="right")
    table.add_column("amort.", justify="right")
    table.add_column("loop", justify="right")
    table.add_column("failures")
    table.add_column("µs/call", justify="right")
    table.add_column("")
    for row in report.names:
        extra = []
        if row.max_request_size:
            extra.append(f"asks ≤{row.max_request_size} B")
        if row.mean_bytes is not None:
            extra.append(f"gets {row.mean_bytes:.0f} B")
        if row.mean_events is not None:
            extra.append(f"{row.mean_events:.1f} events")
        table.add_row(
            row.name, str(row.calls), _num(row.per_request), _num(row.amortized), str(row.loop_calls),
            ", ".join(f"{e} {n}" for e, n in row.failures.items()), _num(row.mean_time_us, 1),
            " ".join(extra),
        )
    parts.append(table)

    if report.by_route:
        routes = Table(title="per request, by name", title_justify="left", show_edge=False,
                       pad_edge=False)
        routes.add_column("name")
        routes.add_column("requests", justify="right")
        routes.add_column("syscalls/req", justify="right")
        routes.add_column("per request")
        for r in report.by_route[:20]:
            routes.add_row(r.name, str(r.requests), f"{r.per_request:.2f}",
                           ", ".join(f"{n} {c:.2f}" for n, c in list(r.by_name.items())[:6]))
        parts.append(routes)

    if report.top_requests:
        top = Table(title="most expensive requests", title_justify="left", show_edge=False, pad_edge=False)
        top.add_column("request", justify="right")
        top.add_column("name")
        top.add_column("calls", justify="right")
        top.add_column("µs in calls", justify="right")
        top.add_column("syscalls in order")
        for r in report.top_requests:
            top.add_row(str(r.id), r.name, str(r.calls), _num(r.time_us, 1),
                        _sequence(r.sequence, r.sequence_truncated, r.calls))
        parts.append(top)

    if report.buckets:
        b = Table(title=f"by {report.by}", title_justify="left", show_edge=False, pad_edge=False)
        b.add_column(report.by)
        b.add_column("name")
        b.add_column("calls", justify="right")
        b.add_column("top syscalls")
        for row in report.buckets[:20]:
            label = row.kind if row.kind in ("loop", "unattributed") and row.kind != report.by else ""
            ident = f"{row.id}" + (f" ({label})" if label else "")
            top5 = ", ".join(f"{n} {c}" for n, c in list(row.by_name.items())[:5])
            b.add_row(ident, row.name, str(row.calls), top5)
        if len(report.buckets) > 20:
            b.add_row("…", f"{len(report.buckets) - 20} more", "", "")
        parts.append(b)

    for hint in report.hints:
        parts.append(Text.assemble(("hint ", "bold yellow"), (f"[{hint.pattern}] ", "yellow"), hint.message))
    if report.cannot_attribute:
        parts.append(Text(f"backend {report.backend}: {report.cannot_attribute}", style="dim"))
    for note in report.notes:
        parts.append(Text(f"note: {note}", style="dim"))
    return Group(*parts)


def print_report(report: SyscallReport, console: Console | None = None) -> None:
    (console or make_console()).print(report_renderable(report))


def compare_table(rows: list[tuple[str, SyscallReport | None, str | None]]) -> Table:
    """One row per loop: (loop name, its report or None, why it has none)."""
    table = Table(title="syscalls per request, by event loop", title_justify="left")
    table.add_column("loop", no_wrap=True)
    table.add_column("requests", justify="right")
    table.add_column("direct", justify="right")
    table.add_column("steady", justify="right")
    table.add_column("amortized", justify="right")
    table.add_column("mmap", justify="right")
    table.add_column("mremap", justify="right")
    table.add_column("munmap", justify="right")
    table.add_column("epoll_ctl", justify="right")
    table.add_column("most made (steady, per request)")
    table.add_column("hints")
    for loop, report, why in rows:
        if report is None:
            table.add_row(loop, "-", "-", "-", "-", "-", "-", "-", "-", why or "", "")
            continue
        n = report.requests or 0
        by_name = {r.name: r for r in report.names}

        def per(name: str) -> str:
            r = by_name.get(name)
            return f"{r.steady_calls / n:.2f}" if (r and n) else ("0.00" if n else "-")

        steady = sorted(report.names, key=lambda r: -r.steady_calls)[:3]
        most = ", ".join(f"{r.name} {r.steady_calls / n:.2f}" for r in steady) if n else ""
        table.add_row(
            loop, str(report.requests),
            _num(report.per_request.total.mean if report.per_request else None),
            _num(report.steady_per_request), _num(report.amortized_per_request),
            per("mmap"), per("mremap"), per("munmap"), per("epoll_ctl"),
            most, ", ".join(h.pattern for h in report.hints),
        )
    return table


def print_compare(rows, console: Console | None = None) -> None:
    console = console or Console()
    console.print(compare_table(rows))
    for loop, report, _ in rows:
        for hint in (report.hints if report else []):
            console.print(Text.assemble((f"{loop} ", "bold"), ("hint ", "bold yellow"),
                                        (f"[{hint.pattern}] ", "yellow"), hint.message))


def make_console() -> Console:
    """A terminal's own width; 140 columns when writing to a file or a pipe."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=140)
