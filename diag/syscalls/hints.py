"""Name the known anti-patterns when the numbers show them.

Each rule looks at the steady count per request (the calls made in requests or by the loop,
start-up excluded where it can be told apart, divided by the requests done), because a
pattern's syscalls are often made by the loop, outside the request's own code: asyncio re-registers a writer or maps a 256 KiB read buffer in transport callbacks,
not in the handler. A rule fires only on its own evidence and its message carries the numbers,
the cause, and what to do.
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

# Per request, over which a pattern is worth naming.
CHURN_MIN = 0.5
REGISTER_MIN = 0.5
SMALL_READS_MIN = 2.0
SMALL_READ_BYTES = 1024
EAGAIN_MIN = 0.5
POLLS_MIN = 0.5
POLL_BATCH_SMALL = 4.0


def _per_request(rows: dict[str, NameRow], names, requests: int) -> float:
    return sum(rows[n].steady_calls for n in names if n in rows) / requests


def find_hints(report: SyscallReport) -> list[Hint]:
    if not report.requests:
        return []
    n = report.requests
    rows = {r.name: r for r in report.names}
    hints: list[Hint] = []

    churn = _per_request(rows, CHURN_NAMES, n)
    if churn >= CHURN_MIN:
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

    reg = _per_request(rows, REGISTER_NAMES, n)
    if reg >= REGISTER_MIN:
        hints.append(Hint(
            "re-registration",
            f"{reg:.2f} epoll_ctl per request: interest in fds is added and removed per request "
            f"(a selector loop registers a writer when a send would block, or a reader per read, and "
            f"removes it after); keep registrations persistent and batch changes before each poll "
            f"(the coroscope runtime and uvloop do).",
        ))

    reads = [rows[r] for r in READ_NAMES if r in rows]
    nreads = sum(r.steady_calls for r in reads)
    if reads and nreads / n >= SMALL_READS_MIN:
        got = [r.mean_bytes for r in reads if r.mean_bytes is not None]
        mean = sum(got) / len(got) if got else None
        if mean is not None and mean < SMALL_READ_BYTES:
            hints.append(Hint(
                "small-reads",
                f"{nreads / n:.2f} reads per request of {mean:.0f} bytes on average: small reads; read "
                f"larger chunks (StreamReader.read(n) rather than readline/readexactly loops, a bigger "
                f"buffer) so one syscall brings the whole request.",
            ))

    eagain = sum(r.failures.get("EAGAIN", 0) for r in rows.values()) / n
    if eagain >= EAGAIN_MIN:
        where = ", ".join(f"{r.name} {r.failures['EAGAIN']}" for r in rows.values() if r.failures.get("EAGAIN"))
        hints.append(Hint(
            "eagain-storm",
            f"{eagain:.2f} EAGAIN per request ({where}): reads or writes are tried before the fd is "
            f"ready; wait for readiness (one poll for many fds) instead of retrying, and do not read "
            f"again after a short read.",
        ))

    polls = [rows[p] for p in POLL_NAMES if p in rows]
    npolls = sum(p.steady_calls for p in polls)
    if polls and npolls / n >= POLLS_MIN:
        events = [p.mean_events for p in polls if p.mean_events is not None]
        batch = sum(events) / len(events) if events else None
        if batch is None or batch < POLL_BATCH_SMALL:
            about = f", {batch:.1f} events per poll" if batch is not None else ""
            hints.append(Hint(
                "small-poll-batches",
                f"{npolls / n:.2f} polls per request{about}: the loop polls for almost every request "
                f"instead of gathering many ready fds per poll; this is expected at low concurrency, "
                f"under load it points to work scheduled one callback at a time (sleep(0), call_soon "
                f"chains, per-request timers).",
            ))
    return hints
