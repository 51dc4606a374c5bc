"""Name the known anti-patterns when the numbers show them.

Each rule looks at the steady count per request (the calls made in requests or by the loop,
start-up excluded where it can be told apart, divided by the requests done), because a
pattern's syscalls are often made by the loop, outside the request's own code: asyncio
re-registers a reader or maps a 256 KiB read buffer in transport callbacks, not in the handler.
A rule fires only on its own evidence and its message carries the numbers, the likely code,
and what to do.

Every threshold is in ``THRESHOLDS``, so what makes a hint fire is read in one place and tests
can build programs just over and just under it. Re-registration has two ways to fire, because
how many of a ``loop.sock_recv`` server's reads would block depends on timing (on two busy
cores, a client that answers within the microseconds between the server's send and its next
recv leaves only one read in eight blocking; on an idle machine nearly all block): per request
its epoll_ctl count goes from 0.26 to 2 between runs. What does not move is the pairing: every
read that fails with EAGAIN is followed by an add and a remove, two epoll_ctl, where a loop with
persistent registrations makes none. So the hint fires on 0.25 epoll_ctl per request, or on
1.5 epoll_ctl per failed read once failed reads are more than a trace.

What depends on the target's CPython version (3.11's getpid in every get_running_loop()) is a
fact of that version's layout table (``GET_RUNNING_LOOP_GETPID``), looked up through
``diag.backtrace.reader.version_fact``, never a version comparison here.
"""
from __future__ import annotations

from ..model.syscalls import Hint, NameRow, SyscallReport

# glibc serves malloc requests at or over this size with mmap (M_MMAP_THRESHOLD's default).
GLIBC_MMAP_THRESHOLD = 128 * 1024
# What asyncio's selector transport asks for on every read (max_size in selector_events).
ASYNCIO_READ_SIZE = 256 * 1024

CHURN_NAMES = ("mmap", "mremap", "munmap")
REGISTER_NAMES = ("epoll_ctl",)
READ_NAMES = ("read", "recvfrom", "recvmsg", "readv")
POLL_NAMES = ("epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6")
GETPID_NAMES = ("getpid",)

# What makes each hint fire: the measure, and the value at or over which it fires (the small
# poll batch hint also needs fewer events per poll than its "under" value).
THRESHOLDS: dict[str, dict[str, float]] = {
    "allocation-churn": {"mmap+mremap+munmap per request": 0.5},
    # either measure fires it: the second does not depend on how many reads happened to block
    "re-registration": {"epoll_ctl per request": 0.25, "epoll_ctl per read failing with EAGAIN": 1.5,
                        "EAGAIN reads per request": 0.01},
    "small-reads": {"reads per request": 2.0, "mean bytes per read under": 1024},
    "eagain-storm": {"share of reads failing with EAGAIN": 0.20, "EAGAIN reads per request": 0.05},
    "small-poll-batches": {"polls per request": 0.5, "events per poll under": 4.0},
    "getpid-per-get-running-loop": {"getpid per request": 0.5},
}


def _at(pattern: str, measure: str) -> float:
    return THRESHOLDS[pattern][measure]


def _steady(rows: dict[str, NameRow], names) -> int:
    return sum(rows[n].steady_calls for n in names if n in rows)


def _eagain_reads(rows: dict[str, NameRow]) -> tuple[int, int, str]:
    """(read calls, of which failed with EAGAIN, "recvfrom 120 of 480, ...") over every call."""
    reads = [rows[r] for r in READ_NAMES if r in rows]
    calls = sum(r.calls for r in reads)
    failed = sum(r.failures.get("EAGAIN", 0) for r in reads)
    where = ", ".join(f"{r.name} {r.failures['EAGAIN']} of {r.calls}" for r in reads if r.failures.get("EAGAIN"))
    return calls, failed, where


def find_hints(report: SyscallReport, version_fact=None) -> list[Hint]:
    """The hints the report's numbers call for. ``version_fact(version, name)`` gives a fact of
    the target's CPython version (default: the layout tables')."""
    if not report.requests:
        return []
    if version_fact is None:
        from ..backtrace.reader import version_fact
    n = report.requests
    rows = {r.name: r for r in report.names}
    hints: list[Hint] = []

    churn = _steady(rows, CHURN_NAMES) / n
    if churn >= _at("allocation-churn", "mmap+mremap+munmap per request"):
        parts = ", ".join(f"{name} {rows[name].steady_calls / n:.2f}" for name in CHURN_NAMES if name in rows)
        big = [r for r in rows.values() if r.max_request_size and r.max_request_size >= GLIBC_MMAP_THRESHOLD]
        if big:
            r = max(big, key=lambda r: r.max_request_size)
            got = f", {r.mean_bytes:.0f} bytes returned on average" if r.mean_bytes is not None else ""
            cause = (f"reads ask for {r.max_request_size} bytes ({r.name}({r.max_request_size}){got}): "
                     f"over glibc's mmap threshold ({GLIBC_MMAP_THRESHOLD // 1024} KiB), so malloc maps each "
                     f"buffer with mmap, CPython shrinks it to the bytes received with mremap and frees it "
                     f"with munmap" + ("; asyncio's transport does recv(262144) on every read"
                                       if r.max_request_size == ASYNCIO_READ_SIZE else "") +
                     ". Read into a reused buffer (recv_into, as the coroscope runtime does) or use uvloop")
        else:
            cause = (f"allocations over glibc's mmap threshold ({GLIBC_MMAP_THRESHOLD // 1024} KiB) are made "
                     f"and freed per request; reuse the buffer, or raise the threshold (MALLOC_MMAP_THRESHOLD_)")
        hints.append(Hint("allocation-churn", f"{churn:.2f} mmap/mremap/munmap per request ({parts}): {cause}."))

    read_calls, eagain, where = _eagain_reads(rows)
    registrations = _steady(rows, REGISTER_NAMES)
    reg = registrations / n
    per_failed = registrations / eagain if eagain else 0.0
    paired = (eagain / n >= _at("re-registration", "EAGAIN reads per request")
              and per_failed >= _at("re-registration", "epoll_ctl per read failing with EAGAIN"))
    if reg >= _at("re-registration", "epoll_ctl per request") or paired:
        also = (f"; {eagain} reads failed with EAGAIN ({eagain / n:.2f} per request) and there are "
                f"{per_failed:.2f} epoll_ctl for each (an add and a remove around every read that would "
                f"block, however many of them block in a run)" if eagain else "")
        hints.append(Hint(
            "re-registration",
            f"{reg:.2f} epoll_ctl per request ({registrations} over {n} requests; thresholds: "
            f"{_at('re-registration', 'epoll_ctl per request'):g} per request, or "
            f"{_at('re-registration', 'epoll_ctl per read failing with EAGAIN'):g} per failed read){also}: "
            f"interest in fds is added and removed per request. Likely code: loop.sock_recv / loop.sock_sendall (asyncio calls "
            f"add_reader / add_writer when the call would block and remove_reader / remove_writer when it "
            f"is done, two epoll_ctl each time), or a transport paused and resumed per request "
            f"(pause_reading / resume_reading, flow control at every write). Fix: serve the connection "
            f"with a Protocol or asyncio streams (one registration for the connection's life), or keep "
            f"the fd registered; the coroscope runtime and uvloop keep registrations persistent and "
            f"batch changes before each poll.",
        ))

    reads = [rows[r] for r in READ_NAMES if r in rows]
    nreads = sum(r.steady_calls for r in reads)
    if reads and nreads / n >= _at("small-reads", "reads per request"):
        got = [r.mean_bytes for r in reads if r.mean_bytes is not None]
        mean = sum(got) / len(got) if got else None
        if mean is not None and mean < _at("small-reads", "mean bytes per read under"):
            hints.append(Hint(
                "small-reads",
                f"{nreads / n:.2f} reads per request of {mean:.0f} bytes on average: small reads; read "
                f"larger chunks (StreamReader.read(n) rather than readline/readexactly loops, a bigger "
                f"buffer) so one syscall brings the whole request.",
            ))

    share = eagain / read_calls if read_calls else 0.0
    if (share >= _at("eagain-storm", "share of reads failing with EAGAIN")
            and eagain / n >= _at("eagain-storm", "EAGAIN reads per request")):
        hints.append(Hint(
            "eagain-storm",
            f"{share:.0%} of reads failed with EAGAIN ({eagain} of {read_calls}: {where}; "
            f"{eagain / n:.2f} per request, threshold {_at('eagain-storm', 'share of reads failing with EAGAIN'):.0%}): "
            f"reads are tried before the fd is ready. Likely code: loop.sock_recv (it reads first and "
            f"waits for readiness only after EAGAIN), non-blocking reads retried in a loop, a read "
            f"again after a short read, or the loop's self-pipe drained after every "
            f"call_soon_threadsafe (an executor or a thread waking the loop per request). Fix: read "
            f"when the poll says the fd is ready (a Protocol's data_received, asyncio streams), one "
            f"poll for many fds, and stop at a short read.",
        ))

    polls = [rows[p] for p in POLL_NAMES if p in rows]
    npolls = sum(p.steady_calls for p in polls)
    if polls and npolls / n >= _at("small-poll-batches", "polls per request"):
        events = [p.mean_events for p in polls if p.mean_events is not None]
        batch = sum(events) / len(events) if events else None
        if batch is None or batch < _at("small-poll-batches", "events per poll under"):
            about = f", {batch:.1f} events per poll" if batch is not None else ""
            hints.append(Hint(
                "small-poll-batches",
                f"{npolls / n:.2f} polls per request{about}: the loop polls for almost every request "
                f"instead of gathering many ready fds per poll; this is expected at low concurrency, "
                f"under load it points to work scheduled one callback at a time (sleep(0), call_soon "
                f"chains, per-request timers).",
            ))

    getpid = _steady(rows, GETPID_NAMES)
    version = tuple(int(p) for p in report.python.split(".")) if report.python else None
    if (getpid / n >= _at("getpid-per-get-running-loop", "getpid per request")
            and version_fact(version, "GET_RUNNING_LOOP_GETPID")):
        hints.append(Hint(
            "getpid-per-get-running-loop",
            f"{getpid / n:.2f} getpid per request ({getpid} over {n} requests) on CPython "
            f"{report.python}: in 3.11, asyncio.get_running_loop() calls getpid() every time (it "
            f"checks that the loop was not inherited through fork). Likely code: whatever asks for the "
            f"running loop per request: asyncio.get_running_loop(), asyncio.sleep, create_task, "
            f"wait_for, timeout, Future(), and the frameworks' calls (anyio, starlette, uvicorn). Fix: "
            f"CPython 3.12 or later (the loop is kept in the thread state: no syscall), or take the "
            f"loop once and pass it along where the hot path asks for it.",
        ))
    return hints
