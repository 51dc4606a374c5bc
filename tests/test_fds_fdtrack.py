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


def test_stacks_stop_at_the_users_code(tracking):
    """An fd the runtime opens for the user (its loop's epoll and eventfd) has a stack of the
    user's frames only: coroscope's (runtime/, diag/) are left out, the site is the user's line."""
    import runtime
    from diag.fds.fdtrack import _DIAG_DIR, _RUNTIME_DIR

    line = _here() + 1
    loop = runtime.new_event_loop()
    try:
        made = {fd: origin for fd, (kind, origin) in fdtrack.fd_origins().items()
                if kind in ("epoll", "eventfd") and origin.stack
                and origin.site.function == "test_stacks_stop_at_the_users_code"}
        assert len(made) >= 2, fdtrack.fd_origins()
        for origin in made.values():
            files = [f.file for f in origin.stack]
            assert not [f for f in files if f.startswith((_DIAG_DIR, _RUNTIME_DIR))], files
            assert (origin.site.file, origin.site.line) == (__file__, line)
            # what is left before the user's line is asyncio's (the runtime's base classes)
            inner = files[:files.index(__file__)]
            assert all(f.startswith(os.path.dirname(os.__file__)) for f in inner), inner
    finally:
        loop.close()


def test_a_stack_of_coroscope_frames_alone_is_kept():
    from diag.fds.fdtrack import _RUNTIME_DIR, users_frames
    from diag.model.fds import Frame
    own = [Frame(_RUNTIME_DIR + "loop.py", 10, "f"), Frame(_RUNTIME_DIR + "poller.py", 20, "g")]
    user = Frame("/srv/app/main.py", 5, "main")
    assert users_frames(own) == own
    assert users_frames([own[0], user, own[1]]) == [user]
