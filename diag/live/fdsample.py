"""Count a process's open fds by kind from /proc/PID/fd, for the dashboard's fd trend.

Reading /proc/PID/fd costs the target nothing: the kernel answers from its own tables and the
target runs no code and makes no syscall. When the fd inventory of ``diag.fds.inventory``
(richer kinds and details) is importable it is used; this module's own readlink-based
classification is the fallback, so the dashboard never depends on it being there.
"""
from __future__ import annotations

import os

from .events import FdSample

_ANON = {"[eventfd]": "eventfd", "[eventpoll]": "epoll", "[timerfd]": "timerfd",
         "[signalfd]": "signalfd", "inotify": "inotify", "[pidfd]": "pidfd"}


def classify(link: str) -> str:
    if link.startswith("socket:"):
        return "socket"
    if link.startswith("pipe:"):
        return "pipe"
    if link.startswith("anon_inode:"):
        return _ANON.get(link[len("anon_inode:"):], "anon")
    if link.startswith("/memfd:"):
        return "memfd"
    if link.startswith("/dev/"):
        return "device"
    if link.startswith("/"):
        return "file"
    return "other"


def sample(pid: int) -> FdSample:
    """One sample; raises ProcessLookupError when the process is gone, PermissionError."""
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    fds: dict[int, tuple[str, str]] = {}
    by_kind: dict[str, int] = {}
    for name in names:
        try:
            link = os.readlink(f"{base}/{name}")
        except FileNotFoundError:
            continue   # closed while we listed: not open any more
        kind = classify(link)
        fds[int(name)] = (kind, link)
        by_kind[kind] = by_kind.get(kind, 0) + 1
    return FdSample(by_kind, fds)
