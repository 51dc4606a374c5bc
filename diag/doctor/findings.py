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
        where = [f"the loop's thread was in {site}"
                 + (f", calling {call}" if not site.startswith(call + " (") else "")
                 + f": {share:.0%} of its samples"
                 for site, call, share in run.loop_thread_sites] if kind == "blocked-loop" else []
        title = {"blocked-loop": "the event loop was blocked",
                 "never-yielded": "a step never yielded to the loop"}.get(kind, kind)
        out.append(Finding(
            f"{title} ({len(items)} time{'s' if len(items) > 1 else ''}, seen by {' and '.join(sources)})",
            "error" if kind in ("blocked-loop", "never-yielded") else "warning",
            90.0 + min(9.0, len(items)), run.label,
            where + [m for m, _s in items[:3]] + ([f"... and {len(items) - 3} more"] if len(items) > 3 else []),
            "move the blocking call off the loop (loop.run_in_executor, or an async library)",
            kind))
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
        "cancel the task when its connection closes (connection_lost), or await it", "task-leak")]


def _fd_leak(run: Run) -> list[Finding]:
    per_cycle = run.leaked_fds_per_cycle
    if not per_cycle or per_cycle <= 0:
        return []
    return [Finding(
        f"{per_cycle:g} fd leaked per connection cycle", "error", 80.0 + min(19.0, per_cycle),
        run.label,
        [f"fds after each cycle (connect, 10 requests, close): {run.fds_after_cycle}",
         f"fds during the run: {int(run.fds[0].value) if run.fds else '?'} -> "
         f"{int(run.fds[-1].value) if run.fds else '?'}"]
        + [f"{n} x {kind} opened at {where}, still open" for kind, where, n in run.leaked_fd_origins],
        "close it on every path (a with block, or finally)" if run.leaked_fd_origins else
        "find the opener with `coroscope leaks -- CMD` (it names the stack that opened each fd)",
        "fd-leak")]


def _crash(run: Run) -> list[Finding]:
    if run.complete:
        return []
    return [Finding("the service did not survive the run", "error", 100.0, run.label,
                    [n for n in run.notes if "exited" in n or "stopped" in n], kind="crash")]


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
            "reuse a read buffer (the coroscope runtime reads into one with recv_into)",
            "allocation-churn"))
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
                            f"p99 {lat.p99_ms:.2f} ms"], kind="latency-tail"))
    if lat.errors:
        share = 100 * lat.errors / max(1, lat.requests + lat.errors)
        out.append(Finding(f"{lat.errors} failed requests ({share:.1f}%)", "warning", share,
                           run.label, [f"{lat.source} at {lat.connections} connections"],
                           kind="failed-requests"))
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


def _awaits(run: Run) -> list[Finding]:
    """Where tasks wait in the user's code, and an await made once per loop iteration (N+1)."""
    out = []
    for flame in run.flames:
        if flame.mode != "await" or not flame.await_sites:
            continue
        top = flame.await_sites[0]
        evidence = [f"{s.site} awaiting {s.waits_on}: {s.share:.0%} of the waiting in your code"
                    + (f" (awaited in a loop at {s.loop_at})" if s.loop_at else "")
                    for s in flame.await_sites[:4]]
        if flame.idle_share:
            evidence.append(f"{flame.idle_share:.0%} of the waiting is in library code with no "
                            f"frame of yours (connections idle between requests)")
        looped = [s for s in flame.await_sites if s.loop_at and s.share >= 0.2]
        if looped:
            s = looped[0]
            out.append(Finding(
                f"N+1 awaits: {s.share:.0%} of the waiting in your code is {s.site} awaiting "
                f"{s.waits_on}, once per iteration of a loop at {s.loop_at}", "warning",
                50 * s.share,
                run.label, evidence,
                "await the iterations together (asyncio.gather or a TaskGroup), or ask the "
                "dependency once for all of them", "n+1-awaits"))
        else:
            out.append(Finding(
                f"tasks wait most in {top.site}, awaiting {top.waits_on} ({top.share:.0%} of "
                f"the waiting in your code)", "info", 20 * top.share, run.label, evidence))
    return out


# syscalls per request at or over which a pattern is named (the hints of `coroscope syscalls`
# name the same patterns from per-request counts)
REREGISTRATION_EPOLL_CTL = 0.25


def _reregistration(run: Run) -> list[Finding]:
    sc = run.syscalls_per_request or {}
    ctl = sc.get("epoll_ctl", 0)
    if ctl < REREGISTRATION_EPOLL_CTL:
        return []
    return [Finding(
        f"{ctl:g} epoll_ctl per request: sockets registered with the poller and removed again "
        f"on every call", "warning", min(60.0, 10 * ctl), run.label,
        [f"epoll_ctl {ctl:g}/request of {sum(sc.values()):g} syscalls ({run.syscalls_backend})",
         "loop.sock_recv / sock_sendall / sock_connect on a socket that would block add a reader "
         "and remove it each call; so does a transport paused and resumed per request"],
        "keep one connection open and use a transport or streams (asyncio.open_connection), "
        "which stay registered", "re-registration")]


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
        for rule in (_crash, _blocked, _leaks, _reregistration, _syscalls, _tail, _hot, _awaits):
            findings += rule(run)
    findings += _compare(runs)
    findings += _fixed(runs, findings)
    return rank(findings)


PROBLEMS = ("error", "warning")


def _fixed(runs: list[Run], findings: list[Finding]) -> list[Finding]:
    """A service and its fixed twin (runs labelled "planted ..." and "fixed ..."): which of the
    first one's problems the second one still has."""
    planted = next((r.label for r in runs if r.label.startswith("planted")), None)
    fixed = next((r.label for r in runs if r.label.startswith("fixed")), None)
    if planted is None or fixed is None:
        return []
    def problems(label):
        return {f.kind: f.title for f in findings if f.run == label and f.severity in PROBLEMS and f.kind}
    before, after = problems(planted), problems(fixed)
    gone = [k for k in before if k not in after]
    left = [k for k in before if k in after]
    new = [k for k in after if k not in before]
    evidence = [f"gone: {before[k]}" for k in gone] + [f"still there: {after[k]}" for k in left] \
        + [f"new in {fixed}: {after[k]}" for k in new]
    return [Finding(f"after the fixes: {len(gone)} of {len(before)} problems gone"
                    + (f", {len(left)} left" if left else "") + (f", {len(new)} new" if new else ""),
                    "info" if not left and not new else "warning", 100.0, "all", evidence,
                    kind="fixed")]
