"""In-process tracking of who opened each fd (and started each thread, process and task).

Why it is built this way:

CPython has audit events for opening files (``open``, raised by ``io.open``, ``os.open`` and
``FileIO``) and for creating sockets (``socket.__new__``), but both are raised *before* the
syscall, so the hook never learns the fd number. So the tracker has two layers:

1. Wrappers on the Python-level functions that return new fds, which see the fd: ``os.open``,
   ``builtins.open``/``io.open``, ``os.pipe``/``pipe2``, ``os.eventfd``, ``os.memfd_create``,
   ``os.dup``/``dup2``, ``socket.socket.__init__`` (covers ``accept``, ``socketpair``,
   ``create_connection``, ``fromfd``), ``select.epoll`` (and selectors' reference to it).
   ``os.close`` forgets the fd. Each wrapper records fd -> (kind, raw stack, task, thread).
2. An audit hook on ``open`` for what the wrappers cannot see (C code that opens files through
   CPython, callers that bound ``open`` before install): it records path -> stack, and a file
   fd with no wrapper record is matched to it by path (``Origin.source == "path"``).

Also recorded: the stack that started each ``threading.Thread``, each ``subprocess.Popen``
(by pid) and each task created through ``BaseEventLoop.create_task``, so the leak checker can
say where a leaked thread, child or pending task came from.

What it misses (say so when it matters): fds made in C without going through CPython's
functions (uvloop/libuv, OpenSSL, sqlite, grpc and other extensions), ``_socket.socket`` used
directly, ``os.openpty``/``pidfd_open``/``recv_fds``, timerfd/signalfd/inotify (no stdlib API in
3.11; ctypes callers are invisible), names bound before install (``from os import pipe``),
fds inherited at exec, and sockets closed without ``os.close`` (their records stay until the
number is reused; a kind check at lookup drops records whose kind no longer matches).

Stacks are stored raw (code object, line) and only turned into ``Frame``s when asked, so a
tracked open costs a few microseconds and no syscall. When runtime tracing is on
(``runtime.tracing.TRACE.on``), every open and close is also passed to ``TRACE.fd_open`` /
``TRACE.fd_close``, which puts the stack in the probe file's fd-origin table so that
``coroscope fds --pid`` can name it from outside.
"""
from __future__ import annotations

import builtins
import io
import os
import sys
import threading
import weakref
from typing import Any

from diag.model.fds import Frame, Origin

STACK_DEPTH = 24
_PATH_MEMORY = 4096                  # audit-hook path records kept (oldest dropped first)

_lock = threading.Lock()
_installed = False
_audit_added = False
_enabled = False                     # the audit hook cannot be removed: it checks this flag
# fd -> (kind, raw stack, task name, request id). Raw stack: tuple of (code, lineno), innermost first.
_fds: dict[int, tuple[str, tuple, str | None, int]] = {}
_paths: dict[str, tuple] = {}        # absolute path -> raw stack of the last audited open
_threads: "weakref.WeakKeyDictionary[threading.Thread, tuple]" = weakref.WeakKeyDictionary()
_tasks: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()
_processes: dict[int, tuple] = {}
_originals: dict[tuple[Any, str], Any] = {}

_OWN_FILE = __file__.removesuffix("c")
_STDLIB = os.path.dirname(os.__file__) + os.sep
_SITE_MARK = os.sep + "site-packages" + os.sep
_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_PLUGIN = os.path.join(os.path.dirname(_OWN_DIR.rstrip(os.sep)), "pytest_plugin.py")
# coroscope's runtime is machinery like asyncio: a loop's fds and tasks are charged to the user
# code that made the loop or asked for the task
_RUNTIME_DIR = os.path.join(os.path.dirname(os.path.dirname(_OWN_DIR.rstrip(os.sep))), "runtime") + os.sep
_DIAG_DIR = os.path.dirname(_OWN_DIR.rstrip(os.sep)) + os.sep
# coroscope's own frames are left out of every stack shown (this tracker, the leak plugin and
# runner, the runtime, `coroscope run`'s launcher): a stack stops at the user's code
_COROSCOPE_DIRS = (_DIAG_DIR, _RUNTIME_DIR)


# ---------------------------------------------------------------------------------------------
# stacks


def _raw_stack(skip: int = 2) -> tuple:
    try:
        f = sys._getframe(skip)
    except ValueError:
        return ()
    out = []
    while f is not None and len(out) < STACK_DEPTH:
        out.append((f.f_code, f.f_lineno))
        f = f.f_back
    return tuple(out)


def _frames(raw: tuple) -> list[Frame]:
    return users_frames([Frame(file=code.co_filename, line=line or 0, function=code.co_name)
                         for code, line in raw if code.co_filename != _OWN_FILE])


def is_coroscope_frame(file: str) -> bool:
    return file.startswith(_COROSCOPE_DIRS)


def users_frames(stack: list[Frame]) -> list[Frame]:
    """The stack without coroscope's own frames (runtime/, diag/). One made of nothing else is
    kept whole: it is then the only word on where the fd came from."""
    mine = [f for f in stack if not is_coroscope_frame(f.file)]
    return mine or stack


def is_library_frame(file: str) -> bool:
    """Frames the site of an open is never charged to: stdlib, coroscope's tracker, pytest and pluggy."""
    return (file.startswith(_STDLIB) and _SITE_MARK not in file) or file.startswith(_OWN_DIR) \
        or file == _PLUGIN or file.startswith("<frozen") or file.startswith(_RUNTIME_DIR) \
        or (_SITE_MARK in file and (f"{os.sep}_pytest{os.sep}" in file or f"{os.sep}pluggy{os.sep}" in file))


def site_of(stack: list[Frame]) -> Frame | None:
    """The innermost frame outside the stdlib and coroscope (the innermost frame if all are)."""
    for frame in stack:
        if not is_library_frame(frame.file):
            return frame
    return stack[0] if stack else None


def _origin(raw: tuple, task: str | None = None, source: str = "fdtrack") -> Origin:
    stack = _frames(raw)
    return Origin(stack=stack, site=site_of(stack), task=task, source=source)


def _current_task_name() -> str | None:
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    loop = asyncio.events._get_running_loop()
    if loop is None:
        return None
    task = asyncio.tasks._current_tasks.get(loop)
    return task.get_name() if task is not None else None


def _current_request() -> int:
    requests = sys.modules.get("runtime.requests")
    return requests.REQUEST_ID.get() if requests is not None else 0


# ---------------------------------------------------------------------------------------------
# recording


def _trace():
    tracing = sys.modules.get("runtime.tracing")
    trace = getattr(tracing, "TRACE", None)
    return trace if trace is not None and trace.on else None


def record(fd: int, kind: str, skip: int = 2) -> None:
    """Remember that ``fd`` of ``kind`` was just opened by the caller's caller (``skip`` frames up)."""
    if not _enabled or fd < 0:
        return
    _fds[fd] = (kind, _raw_stack(skip + 1), _current_task_name(), _current_request())
    trace = _trace()
    if trace is not None:
        try:
            trace.fd_open(fd, kind)
        except Exception:
            pass


def forget(fd: int) -> None:
    if _fds.pop(fd, None) is not None:
        trace = _trace()
        if trace is not None:
            try:
                trace.fd_close(fd)
            except Exception:
                pass


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not _enabled:
        return
    path = args[0] if args else None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str) or not path:
        return
    _paths[os.path.abspath(path)] = _raw_stack(2)
    if len(_paths) > _PATH_MEMORY:
        for key in list(_paths)[: _PATH_MEMORY // 4]:
            _paths.pop(key, None)


# ---------------------------------------------------------------------------------------------
# wrappers


def _patch(owner: Any, name: str, replacement: Any) -> None:
    key = (owner, name)
    if key not in _originals:
        _originals[key] = getattr(owner, name)
    setattr(owner, name, replacement)


def _make_wrappers() -> None:
    o_open, o_pipe, o_close = os.open, os.pipe, os.close
    o_bopen = builtins.open

    def tracked_os_open(*args, **kwargs):
        fd = o_open(*args, **kwargs)
        record(fd, "file")
        return fd

    def tracked_open(*args, **kwargs):
        f = o_bopen(*args, **kwargs)
        # open(fd) wraps an fd someone else opened: not a new fd, keep that opener's record
        if _enabled and not isinstance(args[0] if args else kwargs.get("file"), int):
            try:
                record(f.fileno(), "file")
            except (AttributeError, OSError, ValueError):
                pass
        return f

    def tracked_pipe():
        r, w = o_pipe()
        record(r, "pipe")
        record(w, "pipe")
        return r, w

    def tracked_close(fd):
        o_close(fd)
        forget(fd)

    _patch(os, "open", tracked_os_open)
    _patch(builtins, "open", tracked_open)
    _patch(io, "open", tracked_open)
    _patch(os, "pipe", tracked_pipe)
    _patch(os, "close", tracked_close)

    if hasattr(os, "pipe2"):
        o_pipe2 = os.pipe2

        def tracked_pipe2(flags):
            r, w = o_pipe2(flags)
            record(r, "pipe")
            record(w, "pipe")
            return r, w
        _patch(os, "pipe2", tracked_pipe2)

    for name, kind in (("eventfd", "eventfd"), ("memfd_create", "memfd"), ("dup", "dup")):
        if hasattr(os, name):
            _patch(os, name, _fd_returning(getattr(os, name), kind))
    o_dup2 = os.dup2

    def tracked_dup2(fd, fd2, inheritable=True):
        new = o_dup2(fd, fd2, inheritable)
        record(new, "dup")
        return new
    _patch(os, "dup2", tracked_dup2)

    import socket
    o_sock_init = socket.socket.__init__

    def tracked_socket_init(self, *args, **kwargs):
        o_sock_init(self, *args, **kwargs)
        if _enabled:
            record(self.fileno(), "socket")
    _patch(socket.socket, "__init__", tracked_socket_init)

    import select
    import selectors
    o_epoll = select.epoll

    class _EpollMeta(type):
        def __instancecheck__(cls, obj):
            return isinstance(obj, o_epoll)

    class epoll(metaclass=_EpollMeta):
        """select.epoll, tracked: returns a real ``select.epoll`` (isinstance still holds)."""
        fromfd = staticmethod(o_epoll.fromfd)

        def __new__(cls, *args, **kwargs):
            ep = o_epoll(*args, **kwargs)
            record(ep.fileno(), "epoll")
            return ep
    _patch(select, "epoll", epoll)
    if selectors.EpollSelector._selector_cls is o_epoll:
        _patch(selectors.EpollSelector, "_selector_cls", epoll)

    o_start = threading.Thread.start

    def tracked_start(self):
        if _enabled:
            _threads[self] = _raw_stack(2)
        return o_start(self)
    _patch(threading.Thread, "start", tracked_start)

    import subprocess
    o_popen_init = subprocess.Popen.__init__

    def tracked_popen_init(self, *args, **kwargs):
        raw = _raw_stack(2) if _enabled else None
        o_popen_init(self, *args, **kwargs)
        if raw is not None and self.pid:
            _processes[self.pid] = raw
    _patch(subprocess.Popen, "__init__", tracked_popen_init)

    import asyncio.base_events
    o_create_task = asyncio.base_events.BaseEventLoop.create_task

    def tracked_create_task(self, coro, *args, **kwargs):
        task = o_create_task(self, coro, *args, **kwargs)
        if _enabled:
            try:
                _tasks[task] = _raw_stack(2)
            except TypeError:
                pass
        return task
    _patch(asyncio.base_events.BaseEventLoop, "create_task", tracked_create_task)


def _fd_returning(func, kind):
    def tracked(*args, **kwargs):
        fd = func(*args, **kwargs)
        record(fd, kind)
        return fd
    tracked.__name__ = func.__name__
    tracked.__doc__ = func.__doc__
    return tracked


# ---------------------------------------------------------------------------------------------
# public API


def install() -> None:
    """Start tracking (idempotent). The audit hook, once added, stays; ``uninstall`` disables it."""
    global _installed, _enabled, _audit_added
    with _lock:
        if not _installed:
            _make_wrappers()
            if not _audit_added:
                sys.addaudithook(_audit)
                _audit_added = True
            _installed = True
        _enabled = True


def uninstall() -> None:
    """Stop tracking and put the original functions back. Records are kept."""
    global _installed, _enabled
    with _lock:
        _enabled = False
        for (owner, name), original in _originals.items():
            setattr(owner, name, original)
        _originals.clear()
        _installed = False


def installed() -> bool:
    return _enabled


def install_from_env() -> None:
    """Called by the bootstrap sitecustomize: ``COROSCOPE_FDTRACK=1`` turns tracking on."""
    if os.environ.get("COROSCOPE_FDTRACK", "") in ("1", "true", "yes"):
        install()


def fd_origins() -> dict[int, tuple[str, Origin]]:
    """fd -> (kind recorded at open, Origin) for every fd opened while tracking."""
    return {fd: (kind, Origin(stack=(st := _frames(raw)), site=site_of(st), task=task,
                              request=str(request) if request else None, source="fdtrack"))
            for fd, (kind, raw, task, request) in list(_fds.items())}


def attach(inv) -> None:
    """Give the rows of an inventory of THIS process their opening stacks."""
    from .inventory import attach_origins
    attach_origins(inv, fd_origins(), "fdtrack")
    for row in inv.rows:
        if row.origin is None and row.kind == "file":
            raw = _paths.get(row.target)
            if raw is not None:
                row.origin = _origin(raw, source="path")


def thread_origin(thread: threading.Thread) -> Origin | None:
    raw = _threads.get(thread)
    return _origin(raw) if raw is not None else None


def task_origin(task) -> Origin | None:
    try:
        raw = _tasks.get(task)
    except TypeError:
        raw = None
    return _origin(raw) if raw is not None else None


def process_origin(pid: int) -> Origin | None:
    raw = _processes.get(pid)
    return _origin(raw) if raw is not None else None
