"""fdtrack: every tracked way of opening an fd records the caller's file:line; uninstall restores."""
from __future__ import annotations

import builtins
import os
import select
import socket
import sys
import threading

import pytest

from diag.fds import fdtrack
from diag.fds.inventory import scan


@pytest.fixture
def tracking():
    was = fdtrack.installed()
    fdtrack.install()
    yield
    if not was:
        fdtrack.uninstall()


def _here() -> int:
    return sys._getframe(1).f_lineno


def test_each_wrapper_records_the_opening_line(tracking):
    opened: dict[str, tuple[list[int], int]] = {}
    objects = []
    efd = os.eventfd(0); opened["eventfd"] = ([efd], _here())
    r, w = os.pipe(); opened["pipe"] = ([r, w], _here())
    mfd = os.memfd_create("t"); opened["memfd"] = ([mfd], _here())
    ofd = os.open(__file__, os.O_RDONLY); opened["file"] = ([ofd], _here())
    f = open(__file__); objects.append(f); opened["open"] = ([f.fileno()], _here())
    s = socket.socket(); objects.append(s); opened["socket"] = ([s.fileno()], _here())
    ep = select.epoll(); objects.append(ep); opened["epoll"] = ([ep.fileno()], _here())
    try:
        assert isinstance(ep, select.epoll)
        inv = scan()
        fdtrack.attach(inv)
        by_fd = {row.fd: row for row in inv.rows}
        for name, (fds, line) in opened.items():
            for fd in fds:
                origin = by_fd[fd].origin
                assert origin is not None, name
                assert (origin.site.file, origin.site.line, origin.site.function) == \
                    (__file__, line, "test_each_wrapper_records_the_opening_line"), name
    finally:
        for obj in objects:
            obj.close()
        for fd in (efd, r, w, mfd, ofd):
            os.close(fd)
    assert efd not in fdtrack.fd_origins()     # os.close forgets


def test_thread_and_task_origins(tracking):
    import asyncio
    t = threading.Thread(target=lambda: None); line = _here() + 1
    t.start()
    t.join()
    assert fdtrack.thread_origin(t).site.line == line

    async def main():
        task = asyncio.get_running_loop().create_task(asyncio.sleep(0)); created = _here()
        await task
        return fdtrack.task_origin(task).site.line, created

    got, created = asyncio.run(main())
    assert got == created


def test_uninstall_restores_and_env_hook(monkeypatch):
    was = fdtrack.installed()
    if was:
        pytest.skip("tracking was on for the whole session")
    original = (os.open, builtins.open, os.pipe, select.epoll, socket.socket.__init__)
    monkeypatch.delenv("COROSCOPE_FDTRACK", raising=False)
    fdtrack.install_from_env()
    assert not fdtrack.installed() and os.open is original[0]
    monkeypatch.setenv("COROSCOPE_FDTRACK", "1")
    fdtrack.install_from_env()
    try:
        assert fdtrack.installed() and os.open is not original[0]
    finally:
        fdtrack.uninstall()
    assert (os.open, builtins.open, os.pipe, select.epoll, socket.socket.__init__) == original
