"""Count a process's open fds by kind from /proc/PID/fd, for the dashboard's fd trend.

Reading /proc/PID/fd costs the target nothing: the kernel answers from its own tables and the
target runs no code and makes no syscall. Kinds are ``diag.fds.inventory``'s, from the link
text alone (no stat, no fdinfo): cheap enough to take every refresh.
"""
from __future__ import annotations

import os

from diag.fds.inventory import classify_target

from .events import FdSample


def classify(link: str) -> str:
    """The kind of an fd from its /proc/PID/fd link, without a stat: the inventory's kinds, with
    paths split into devices and files."""
    kind = classify_target(link)
    if kind:
        return kind
    return "device" if link.startswith("/dev/") else "file"


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
