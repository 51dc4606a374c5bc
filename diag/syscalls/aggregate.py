"""Raw counts -> the syscalls report (``diag.model.syscalls.SyscallReport``).

Two per-request figures, because they answer different questions:
- direct: the calls made while a request was current on the thread, per request; this is what
  the request's own code costs (the 3 getppid and 1 write it does);
- amortized: every call of the process in the window, the loop's polls and accepts included,
  divided by the requests done; this is what the service costs per request.
A service whose direct count is 2 and amortized 5 spends its syscalls in the loop, not in
handlers; the hints look at both.

Which requests the per-request figures are over: with a probe file, the window's own
(``RawCounts.window``: those that began after the window opened and ended before it closed,
known from the probe file's counters and table of running requests, not from its ring), each
with every one of its calls; requests that ran across an edge had calls outside the window,
so theirs count in the totals and the amortized figure only, and the report says how many.
"""
from __future__ import annotations

import math

from ..model.syscalls import (
    BucketRow,
    Distribution,
    NameRow,
    PerRequest,
    RequestCost,
    RouteCost,
    SyscallReport,
)
from .counts import LOOP, POLL_LIKE, READ_LIKE, REQUEST, UNATTRIBUTED, Cell, RawCounts, errno_name
from .hints import find_hints

TOP_REQUESTS = 5


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100); 0 for an empty list."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def distribution(values: list[int], requests: int) -> Distribution:
    """Distribution over ``requests`` requests, of which ``values`` are the non-absent ones."""
    padded = sorted([0] * max(0, requests - len(values)) + list(values))
    total = sum(padded)
    return Distribution(
        mean=total / requests if requests else 0.0,
        p50=percentile(padded, 50),
        p99=percentile(padded, 99),
        max=max(padded) if padded else 0,
        total=total,
    )


def _fold_request_cells(raw: RawCounts) -> None:
    """Request buckets a backend put among the other cells go where the aggregator reads them."""
    for bucket in [b for b in raw.cells if b[0] == REQUEST]:
        for name, cell in raw.cells.pop(bucket).items():
            raw.add_cell(REQUEST, bucket[1], name, cell.count, cell.time_ns, cell.timed,
                         cell.returned, cell.max_request_size)
            for err, n in cell.errors.items():
                raw.add_errors(REQUEST, bucket[1], name, err, n)


def request_count(raw: RawCounts) -> int:
    if raw.window is not None:
        return raw.window.count
    return max(raw.requests_done or 0, len(raw.request_calls))


def build_report(raw: RawCounts, *, target: str, pid: int | None, loop: str | None = None) -> SyscallReport:
    _fold_request_cells(raw)
    requests = request_count(raw)
    window = raw.window
    by_name_total: dict[str, Cell] = {}
    by_name_steady: dict[str, Cell] = {}
    by_name_loop: dict[str, int] = {}
    by_name_in_requests: dict[str, list[int]] = {}
    loop_calls = unattributed = total = 0
    request_totals: dict[int, tuple[int, int]] = {}  # request id -> (calls, time_ns)

    for (kind, ident), names in raw.cells.items():
        for name, cell in names.items():
            by_name_total.setdefault(name, Cell()).add(cell)
            if kind != UNATTRIBUTED:
                by_name_steady.setdefault(name, Cell()).add(cell)
            total += cell.count
            if kind == LOOP:
                loop_calls += cell.count
                by_name_loop[name] = by_name_loop.get(name, 0) + cell.count
            elif kind == UNATTRIBUTED:
                unattributed += cell.count
    for name, cell in raw.request_cells.items():
        by_name_total.setdefault(name, Cell()).add(cell)
        by_name_steady.setdefault(name, Cell()).add(cell)
        total += cell.count
    edge_requests = edge_calls = 0
    for rid, calls in raw.request_calls.items():
        n = sum(calls.values())
        if window is not None and not window.holds(rid):
            edge_requests += 1
            edge_calls += n
            continue
        for name, count in calls.items():
            by_name_in_requests.setdefault(name, []).append(count)
        request_totals[rid] = (n, raw.request_time.get(rid, 0))
    if edge_requests:
        raw.notes.append(f"{edge_requests} request{'s' if edge_requests != 1 else ''} ran across "
                         f"the window's edges (began before "
                         f"it or were still running at its end): their {edge_calls} syscalls are "
                         f"in the totals, not in the per-request figures")

    direct = raw.by == REQUEST  # the backend charged each call to the request current on its thread
    per_request = None
    if direct and requests:
        per_request = PerRequest(
            by_name={n: distribution(v, requests) for n, v in sorted(by_name_in_requests.items())},
            total=distribution([c for c, _ in request_totals.values()], requests),
        )

    rows = []
    # Steady calls first (requests and loop), so interpreter start-up does not top the table.
    def order(kv):
        return (-by_name_steady.get(kv[0], Cell()).count, -kv[1].count, kv[0])

    for name, cell in sorted(by_name_total.items(), key=order):
        in_requests = sum(by_name_in_requests.get(name, ()))
        steady = by_name_steady.get(name, Cell())
        ok = steady.count - sum(steady.errors.values())
        rows.append(NameRow(
            name=name,
            calls=cell.count,
            per_request=(in_requests / requests) if (per_request is not None) else None,
            amortized=(cell.count / requests) if requests else None,
            loop_calls=by_name_loop.get(name, 0),
            steady_calls=steady.count,
            failures={errno_name(e): n for e, n in sorted(cell.errors.items(), key=lambda kv: -kv[1])},
            mean_time_us=(cell.time_ns / cell.timed / 1000.0) if (raw.has_timing and cell.timed) else None,
            mean_bytes=(steady.returned / ok) if (name in READ_LIKE and ok) else None,
            mean_events=(steady.returned / ok) if (name in POLL_LIKE and ok) else None,
            max_request_size=steady.max_request_size if (name in READ_LIKE and steady.max_request_size) else None,
        ))

    top = []
    ranked = sorted(request_totals.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
    for rid, (calls, t) in ranked[:TOP_REQUESTS]:
        seq = raw.sequences.get(rid, [])
        top.append(RequestCost(
            id=rid,
            name=raw.request_names.get(rid, ""),
            calls=calls,
            time_us=(t / 1000.0) if raw.has_timing else None,
            sequence=list(seq),
            sequence_truncated=len(seq) < calls,
        ))

    buckets = []
    if raw.by != REQUEST or per_request is None:
        for (kind, ident), names in sorted(raw.cells.items(), key=lambda kv: -sum(c.count for c in kv[1].values())):
            buckets.append(BucketRow(
                kind=kind, id=ident, name=raw.bucket_names.get((kind, ident), ""),
                calls=sum(c.count for c in names.values()),
                by_name={n: c.count for n, c in sorted(names.items(), key=lambda kv: -kv[1].count)},
            ))

    report = SyscallReport(
        backend=raw.backend,
        by=raw.by,
        target=target,
        pid=pid,
        loop=loop,
        duration_s=round(raw.duration_s, 3),
        requests=requests,
        total_calls=total,
        loop_calls=loop_calls,
        unattributed_calls=unattributed,
        per_request=per_request,
        amortized_per_request=(total / requests) if requests else None,
        steady_per_request=((total - unattributed) / requests) if requests else None,
        names=rows,
        top_requests=top,
        buckets=buckets,
        hints=[],
        cannot_attribute=raw.cannot_attribute,
        notes=list(raw.notes),
        complete=raw.complete,
        python=f"{raw.python[0]}.{raw.python[1]}" if raw.python else None,
        window_start_ns=window.start_ns if window is not None else None,
        window_end_ns=window.end_ns if window is not None else None,
        requests_across_edges=edge_requests,
    )
    if per_request is not None:
        report.by_route = route_costs(raw)
    report.hints = find_hints(report)
    return report


MAX_ROUTES = 50
UNNAMED = "(unnamed)"


def route_costs(raw: RawCounts) -> list[RouteCost]:
    """Direct counts per request name over the window's requests (all of them, those that
    made no syscall included, when the window is known; else those that made one). A request
    whose name was lost (its begin record overwritten before it was read) is "(unnamed)"."""
    calls_by_route: dict[str, dict[str, int]] = {}
    requests_by_route: dict[str, int] = {}
    names, window = raw.request_names, raw.window

    def add(route: str, calls: dict[str, int] | None) -> None:
        requests_by_route[route] = requests_by_route.get(route, 0) + 1
        acc = calls_by_route.setdefault(route, {})
        for name, count in (calls or {}).items():
            acc[name] = acc.get(name, 0) + count

    if window is not None:
        seen = 0
        for rid in range(window.first_after + 1, window.last_id + 1):
            if not window.holds(rid):
                continue
            calls, name = raw.request_calls.get(rid), names.get(rid)
            if calls is None and name is None:
                continue
            seen += 1
            add(name or UNNAMED, calls)
        for _ in range(max(0, window.count - seen)):      # no name and no syscall
            add(UNNAMED, None)
    else:
        for rid, calls in raw.request_calls.items():
            add(names.get(rid) or UNNAMED, calls)
    out = []
    for route, n in sorted(requests_by_route.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_ROUTES]:
        calls = calls_by_route[route]
        out.append(RouteCost(
            name=route, requests=n, per_request=sum(calls.values()) / n,
            by_name={k: v / n for k, v in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0]))}))
    return out
