"""The epoll poller: persistent registration, interest changes applied in one batch per poll.

Why not ``selectors.EpollSelector``: it makes one ``epoll_ctl`` the moment anything changes.
An event loop changes interest far more often than the kernel needs to hear about it: a
``sock_recv`` that waits adds a reader and removes it again, a transport that hits EAGAIN adds
a writer and drops it when the buffer drains, often within one iteration. Here (as in libuv)
``register``/``modify`` only record what the loop *wants*; ``select`` compares that with what
the kernel *has* and issues the ``epoll_ctl`` calls just before ``epoll_wait``. A change that is
undone before the next poll costs no syscall at all.

The one change applied at once is the removal of an fd the kernel knows about. The loop's
callers remove a reader and then close the fd; if the close comes first and the file lives on
elsewhere (a dup, a fork), the kernel keeps reporting it under a number we can no longer
unregister: a level-triggered epoll would then spin. Removing immediately rules that out.

An ``epoll_ctl`` that fails when the batch is applied (the fd was closed meanwhile: EBADF; a
regular file: EPERM) reports the fd ready once, for what it was registered for, so its callback
runs and meets the error from its own syscall, where the caller can handle it.

The events buffer passed to ``epoll_wait`` holds one event per registered fd, so one poll
returns every ready fd. The class keeps the ``selectors.BaseSelector`` interface because
asyncio's selector loop, which we build on, speaks it.
"""
from __future__ import annotations

import select
import selectors

from .tracing import TRACE

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE
_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_SelectorKey = selectors.SelectorKey


def _fileobj_to_fd(fileobj) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


def _epoll_mask(events: int) -> int:
    return (_EPOLLIN if events & EVENT_READ else 0) | (_EPOLLOUT if events & EVENT_WRITE else 0)


class _Map:
    """Read-only fd/fileobj -> key mapping, what ``get_map()`` returns (as selectors does)."""

    def __init__(self, poller: "EpollPoller"):
        self._poller = poller

    def __len__(self):
        return len(self._poller._keys)

    def __getitem__(self, fileobj):
        try:
            return self._poller._keys[_fileobj_to_fd(fileobj)]
        except (KeyError, ValueError):
            raise KeyError(f"{fileobj!r} is not registered") from None

    def get(self, fileobj, default=None):
        try:
            return self[fileobj]
        except KeyError:
            return default

    def __iter__(self):
        return iter(self._poller._keys)

    def __contains__(self, fileobj):
        return self.get(fileobj) is not None


class EpollPoller(selectors.BaseSelector):
    def __init__(self):
        self._epoll = select.epoll()  # EPOLL_CLOEXEC, as Python always asks
        self._epoll_fd = self._epoll.fileno()
        if TRACE.on:
            TRACE.fd_open(self._epoll_fd, "epoll")
        # fd -> SelectorKey: what the loop wants. Every fd here is either in _kernel with the
        # mask its events translate to, or in _dirty.
        self._keys: dict[int, selectors.SelectorKey] = {}
        # fd -> epoll mask the kernel has for it (after the last applied batch). A subset of _keys.
        self._kernel: dict[int, int] = {}
        # fds whose wanted mask may differ from _kernel: an ordered set (dict of None values).
        self._dirty: dict[int, None] = {}
        # fds whose epoll_ctl failed in the last batch: reported ready once by the next select.
        self._failed: list[int] = []
        self._map = _Map(self)
        self.ctl_calls = 0  # epoll_ctl syscalls made: tests prove the batching with it

    # -- the selectors interface ------------------------------------------------------------
    def register(self, fileobj, events, data=None):
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        if self._epoll is None:
            raise RuntimeError("the poller is closed")
        fd = _fileobj_to_fd(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = _SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        self._dirty[fd] = None
        return key

    def unregister(self, fileobj):
        fd = _fileobj_to_fd(fileobj) if not isinstance(fileobj, int) else fileobj
        try:
            key = self._keys.pop(fd)
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        self._dirty.pop(fd, None)
        if self._kernel.pop(fd, None) is not None:
            self.ctl_calls += 1
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass  # already closed: the kernel dropped it with the last reference
        return key

    def modify(self, fileobj, events, data=None):
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = _fileobj_to_fd(fileobj) if not isinstance(fileobj, int) else fileobj
        try:
            key = self._keys[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        if events != key.events:
            self._dirty[fd] = None
        key = _SelectorKey(key.fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def get_key(self, fileobj):
        fd = fileobj if isinstance(fileobj, int) else _fileobj_to_fd(fileobj)
        try:
            return self._keys[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def get_map(self):
        return self._map

    def fileno(self) -> int:
        return self._epoll_fd

    def close(self):
        if self._epoll is not None:
            fd = self._epoll_fd
            self._epoll.close()
            self._epoll = None
            if TRACE.on:
                TRACE.fd_close(fd)
        self._keys.clear()
        self._kernel.clear()
        self._dirty.clear()

    # -- polling ----------------------------------------------------------------------------
    def _apply_changes(self) -> None:
        keys, kernel, epoll = self._keys, self._kernel, self._epoll
        for fd in self._dirty:
            want = _epoll_mask(keys[fd].events)
            have = kernel.get(fd)
            if have == want:
                continue
            self.ctl_calls += 1
            try:
                if have is None:
                    try:
                        epoll.register(fd, want)
                    except FileExistsError:  # a dup of a registered file got this number
                        self.ctl_calls += 1
                        epoll.modify(fd, want)
                else:
                    try:
                        epoll.modify(fd, want)
                    except FileNotFoundError:  # closed and reopened under the same number
                        self.ctl_calls += 1
                        epoll.register(fd, want)
            except OSError:
                kernel.pop(fd, None)
                self._failed.append(fd)
                continue
            kernel[fd] = want
        self._dirty.clear()

    def select(self, timeout=None):
        if self._dirty:
            self._apply_changes()
        ready = []
        keys = self._keys
        if self._failed:
            for fd in self._failed:
                key = keys.get(fd)
                if key is not None:
                    ready.append((key, key.events))
            self._failed.clear()
            timeout = 0
        if timeout is None:
            timeout = -1
        elif timeout <= 0:
            timeout = 0
        try:
            events = self._epoll.poll(timeout, len(self._kernel) or 1)
        except InterruptedError:
            return ready
        for fd, ev in events:
            key = keys.get(fd)
            if key is None:
                continue
            # As selectors does: an error or hangup wakes both directions.
            mask = 0
            if ev & ~_EPOLLOUT:
                mask = EVENT_READ
            if ev & ~_EPOLLIN:
                mask |= EVENT_WRITE
            mask &= key[2]  # key.events: see Loop._process_events on why the index
            if mask:
                ready.append((key, mask))
        return ready
