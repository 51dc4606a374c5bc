"""Findings: what is wrong with the service, ranked by impact, each with its evidence.

Each rule is a function of one run (or of all runs, for comparisons) returning findings. The
ranking is severity first (an error is a defect: a blocked loop, a leak, a crash; a warning is
a cost: extra syscalls, a long tail; info is context), then ``impact``, which each rule
computes as a percentage of something the user pays for, so findings of one severity compare.
"""
from __future__ import annotations

from diag.model.doctor import Finding, Run

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
MAP_SYSCALLS = ("mmap", "munmap", "mremap", "brk", "madvise")


def rank(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (SEVERITY_ORDER.get(f.severity, 3), -f.impact, f.title))


def _blocked(run: Run) -> list[Finding]:
    out = []
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for kind, message, source in run.warnings:
        by_kind.setdefault(kind, []).append((message, source))
    for kind, items in by_kind.items():
        sources = sorted({s for _m, s in items})
        title = {"blocked-loop": "the event loop was blocked",
                 "never-yielded": "a step never yielded to the loop"}.get(kind, kind)
        out.append(Finding(
            f"{title} ({len(items)} time{'s' if len(items) > 1 else ''}, seen by {' and '.join(sources)})",
            "error" if kind in ("blocked-loop", "never-yielded") else "warning",
            90.0 + min(9.0, len(items)), run.label,
            [m for m, _s in items[:5]] + ([f"... and {len(items) - 5} more"] if len(items) > 5 else []),
            "move the blocking call off the loop (loop.run_in_executor, or an async library)"))
    return out


def _leaks(run: Run) -> list[Finding]:
    return _fd_leak(run) + _task_leak(run)


def _task_leak(run: Run) -> list[Finding]:
    per_cycle = run.leaked_tasks_per_cycle
    if not per_cycle or per_cycle <= 0:
        return []
    return [Finding(
        f"{per_cycle:g} task{'s' if per_cycle != 1 else ''} left pending per connection cycle",
        "error", 80.0 + min(19.0, per_cycle), run.label,
        [f"live tasks after each cycle (connect, 10 requests, close): {run.tasks_after_cycle}"]
        + [f"still pending: {s}" for s in run.leaked_task_survivors],
        "cancel the task when its connection closes (connection_lost), or await it")]


def _fd_leak(run: Run) -> list[Finding]:
    per_cycle = run.leaked_fds_per_cycle
    if not per_cycle or per_cycle <= 0:
        return []
    return [Finding(
        f"{per_cycle:g} fd leaked per connection cycle", "error", 80.0 + min(19.0, per_cycle),
        run.label,
        [f"fds after each cycle (connect, 10 requests, close): {run.fds_after_cycle}",
         f"fds during the run: {int(run.fds[0].value) if run.fds else '?'} -> "
         f"{int(run.fds[-1].value) if run.fds else '?'}"],
        "find the opener with `coroscope leaks -- CMD` (it names the stack that opened each fd)")]


def _crash(run: Run) -> list[Finding]:
    if run.complete:
        return []
    return [Finding("the service did not survive the run", "error", 100.0, run.label,
                    [n for n in run.notes if "exited" in n or "stopped" in n])]


def _syscalls(run: Run) -> list[Finding]:
    sc = run.syscalls_per_request
    if not sc:
        return []
    total = sum(sc.values())
    out = []
    mapping = {k: v for k, v in sc.items() if k in MAP_SYSCALLS and v >= 0.5}
    if mapping:
        share = sum(mapping.values()) / total
        out.append(Finding(
            f"{sum(mapping.values()):g} of {total:g} syscalls per request map and unmap memory",
            "warning", 100 * share, run.label,
            [", ".join(f"{k} {v:g}/request" for k, v in mapping.items()),
             "a large read buffer allocated and freed per read (asyncio reads with "
             "recv(262144)) makes glibc mmap it, shrink it and unmap it each time"],
            "reuse a read buffer (the coroscope runtime reads into one with recv_into)"))
    out.append(Finding(
        f"{total:g} syscalls per request", "info", min(50.0, total), run.label,
        [", ".join(f"{k} {v:g}" for k, v in sc.items()) + f" ({run.syscalls_backend})"]))
    return out


def _tail(run: Run) -> list[Finding]:
    lat = run.latency
    if not lat or not lat.p50_ms or not lat.p99_ms:
        return []
    out = []
    ratio = lat.p99_ms / max(lat.p50_ms, 1e-3)
    if ratio >= 10 and lat.p99_ms >= 50:
        out.append(Finding(f"long latency tail: p99 {lat.p99_ms:.1f} ms is {ratio:.0f}x p50",
                           "warning", min(60.0, ratio), run.label,
                           [f"{lat.source}, {lat.connections} connections: p50 {lat.p50_ms:.2f} ms, "
                            f"p99 {lat.p99_ms:.2f} ms"]))
    if lat.errors:
        share = 100 * lat.errors / max(1, lat.requests + lat.errors)
        out.append(Finding(f"{lat.errors} failed requests ({share:.1f}%)", "warning", share,
                           run.label, [f"{lat.source} at {lat.connections} connections"]))
    return out


def short_frame(frame: str) -> str:
    """``f (/long/path/pkg/mod.py)`` -> ``f (pkg/mod.py)``: enough to find it, short enough to read."""
    name, sep, rest = frame.partition(" (")
    if not sep or not rest.endswith(")"):
        return frame
    parts = rest[:-1].split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


def _hot(run: Run) -> list[Finding]:
    out = []
    for flame in run.flames:
        tops = [(f, s) for f, s in flame.top if not f.startswith("[event loop]")]
        if not tops:
            continue
        tops = [(short_frame(f), s) for f, s in tops]
        frame, share = tops[0]
        if flame.mode == "cpu" and share >= 0.2:
            out.append(Finding(f"hot spot: {share:.0%} of on-CPU samples in {frame}", "info",
                               100 * share, run.label,
                               [f"{f} {s:.0%}" for f, s in tops[:5]]))
    return out


def _waits(run: Run) -> list[Finding]:
    """Where the service's own code waits, from the await profile: the site and what it awaits.

    An await reached from inside a loop of the service's (diag.doctor.waits.looped_at) that
    holds a third or more of all task waiting is the N+1 pattern: a warning, ranked by that
    share. Otherwise the site where tasks wait most is context (info): most of a server's
    waiting is idle connections and the one await each request must make.
    """
    out = []
    for flame in run.flames:
        if flame.mode != "await" or not flame.await_sites:
            continue
        site, waits, share, loop = flame.await_sites[0]
        what = waits.split(" -> ")[0]
        evidence = [f"{s:.0%} at {where}: {w}" + (f" (in the loop at {lp})" if lp else "")
                    for where, w, s, lp in flame.await_sites[:5]]
        if loop and share >= 0.33:
            out.append(Finding(
                f"N+1 await: {share:.0%} of task waiting is at {site}, on {what}, awaited once "
                f"per item of the loop at {loop.split(' `')[0]}", "warning", 100 * share, run.label,
                evidence, f"batch the loop's awaits: one query for all the items ({loop}), or "
                          f"asyncio.gather them"))
        else:
            out.append(Finding(f"tasks wait most ({share:.0%}) at {site}, on {what}", "info",
                               20 * share, run.label, evidence))
    return out


def _reader_churn(run: Run) -> list[Finding]:
    """epoll_ctl on every request: a reader registered and removed around each read."""
    sc = run.syscalls_per_request or {}
    churn = sc.get("epoll_ctl", 0)
    if churn < 1:
        return []
    total = sum(sc.values())
    return [Finding(
        f"{churn:g} epoll_ctl per request: a reader is added and removed around each read",
        "warning", 100 * churn / total, run.label,
        [f"epoll_ctl {churn:g} of {total:g} syscalls per request ({run.syscalls_backend})",
         "loop.sock_recv / sock_sendall register the socket with the loop each time they wait "
         "and remove it after; a transport keeps its reader registered"],
        "read through a protocol or asyncio streams (loop.create_connection, "
        "asyncio.open_connection) instead of loop.sock_recv per message")]


def _compare(runs: list[Run]) -> list[Finding]:
    """Side by side: the same service on two loops."""
    out = []
    measured = [r for r in runs if r.syscalls_per_request]
    if len(measured) >= 2:
        totals = {r.label: sum(r.syscalls_per_request.values()) for r in measured}
        best = min(totals, key=totals.get)
        worst = max(totals, key=totals.get)
        if totals[worst] > totals[best]:
            out.append(Finding(
                f"{best} makes {totals[best]:g} syscalls per request, {worst} {totals[worst]:g}",
                "info", 100 * (totals[worst] - totals[best]) / totals[worst], "all",
                [f"{label}: {', '.join(f'{k} {v:g}' for k, v in r.syscalls_per_request.items())}"
                 for label, r in ((r.label, r) for r in measured)]))
    rated = [r for r in runs if r.latency and r.latency.requests_per_s]
    if len(rated) >= 2:
        a, b = sorted(rated, key=lambda r: -r.latency.requests_per_s)[:2]
        ratio = a.latency.requests_per_s / b.latency.requests_per_s
        out.append(Finding(
            f"{a.label} served {ratio:.2f}x the requests/s of {b.label}", "info",
            min(40.0, 100 * (ratio - 1)), "all",
            [f"{r.label}: {r.latency.requests_per_s:,.0f} req/s, p99 "
             f"{(r.latency.p99_ms or 0):.2f} ms ({r.latency.source}, {r.latency.connections} connections)"
             for r in rated]))
    return out


def find(runs: list[Run]) -> list[Finding]:
    findings: list[Finding] = []
    for run in runs:
        for rule in (_crash, _blocked, _leaks, _syscalls, _reader_churn, _tail, _hot, _waits):
            findings += rule(run)
    findings += _compare(runs)
    return rank(findings)
