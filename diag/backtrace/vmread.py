"""Read another process's memory while it runs: process_vm_readv, else /proc/PID/mem.

gdb stops its target with ptrace for as long as it reads; on 10,000 tasks that was seconds of a
frozen service.  process_vm_readv(2) copies bytes out of a running process with one system call
and no stop, no signal, no write: the kernel checks the same permission as ptrace attach (root,
or the same user where yama's ptrace_scope allows it) and nothing else happens to the target.
Where the call is missing (a seccomp filter, an old kernel: ENOSYS) /proc/PID/mem gives the
same bytes through pread.

The memory changes under us, so this class does two kinds of read.  ``read`` goes through a
page cache that lives for one snapshot (a walk of 10,000 tasks touches the same code objects and
types thousands of times, and one 4 KiB copy costs what an 8-byte copy costs); ``fresh`` always
asks the kernel, and is what the torn-read check compares against.  The class is the gdb
scripts' ``coroscope_memory.Memory`` with its one hook, ``read_raw``, replaced: the page cache,
the bounded ``u64``/``cstring``/... helpers and ``Unreadable`` are that module's, so the object
readers of the layout layer run unchanged on either source.
"""
from __future__ import annotations

import ctypes
import errno
import os
from array import array
from itertools import chain

from diag.errors import CoroscopeError, TargetGone

from . import layer

_memory = layer.module("coroscope_memory")
Unreadable = _memory.Unreadable
PAGE = _memory.PAGE
MAX_READ = _memory.MAX_READ
IOV_MAX = 1024  # Linux UIO_MAXIOV: iovecs per process_vm_readv


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_vm_readv = getattr(_libc, "process_vm_readv", None)
if _vm_readv is not None:
    _vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IOVec), ctypes.c_ulong,
                          ctypes.POINTER(_IOVec), ctypes.c_ulong, ctypes.c_ulong]
    _vm_readv.restype = ctypes.c_ssize_t


def permission_message(pid: int) -> str:
    """What is missing to read pid's memory, in one line."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = f.read().strip()
    except OSError:
        scope = None
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        owner = None
    if owner is not None and owner != os.geteuid() and os.geteuid() != 0:
        return (f"may not read the memory of pid {pid}: it belongs to uid {owner}, "
                f"this is uid {os.geteuid()} (run as root or as that user)")
    if scope not in (None, "0"):
        return (f"may not read the memory of pid {pid}: kernel.yama.ptrace_scope is {scope} "
                f"(needs root, CAP_SYS_PTRACE, or ptrace_scope 0)")
    return f"may not read the memory of pid {pid} (needs root or CAP_SYS_PTRACE)"


class ProcessMemory(_memory.Memory):
    """Bounded reads of a live process; ``Unreadable`` for an address that is not mapped."""

    def __init__(self, pid: int):
        super().__init__()
        self.pid = pid
        self._mem_file = None
        self._use_vm = _vm_readv is not None
        self._buffer = ctypes.create_string_buffer(PAGE)
        self.whole = True    # every byte of this snapshot is in ``pages`` (see changed_pages)

    def close(self) -> None:
        if self._mem_file is not None:
            os.close(self._mem_file)
            self._mem_file = None

    def new_snapshot(self) -> None:
        """Forget every cached page: the next reads see the target as it is now."""
        self.pages.clear()
        self.bad_pages.clear()
        self.whole = True

    def _page(self, base: int):
        if len(self.pages) >= _memory.MAX_CACHED_PAGES:
            self.whole = False       # the cache starts again: earlier pages are no longer held
        return super()._page(base)

    def _direct(self, address: int, size: int) -> bytes:
        self.whole = False           # read past the cache: those bytes are not in ``pages``
        return super()._direct(address, size)

    def changed_pages(self) -> set[int] | None:
        """The cached pages of this snapshot whose bytes are not the same now (or no longer
        readable), read again IOV_MAX pages a system call; None when the snapshot was not read
        wholly through the cache (the cache overflowed, a read went round it), so pages cannot
        tell.  No page changed means every byte read since ``new_snapshot`` is as it was."""
        if not self.whole:
            return None
        bases = list(self.pages)
        changed: set[int] = set()
        for i, now in self.fresh_chunks([(b, PAGE) for b in bases]):
            chunk = bases[i:i + IOV_MAX]
            if now is not None and now == b"".join([self.pages[b] for b in chunk]):
                continue
            currents = (self.fresh_many([(b, PAGE) for b in chunk]) if now is None else
                        [now[k * PAGE:(k + 1) * PAGE] for k in range(len(chunk))])
            changed.update(b for b, current in zip(chunk, currents) if current != self.pages[b])
        return changed

    def forget(self, address: int, size: int) -> None:
        base = address & ~(PAGE - 1)
        while base < address + size:
            self.pages.pop(base, None)
            base += PAGE

    # -- the system calls ----------------------------------------------------------------

    def read_raw(self, address: int, size: int) -> bytes | None:
        """size bytes at address, or None if not mapped; raises for a gone or forbidden target.
        The one hook the page cache of ``coroscope_memory.Memory`` reads through."""
        if self._use_vm:
            buf = self._buffer if size <= PAGE else ctypes.create_string_buffer(size)
            local = _IOVec(ctypes.cast(buf, ctypes.c_void_p), size)
            remote = _IOVec(address, size)
            n = _vm_readv(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
            if n == size:
                return buf.raw[:size]
            if n >= 0:
                return None  # a partial read: the range crosses into an unmapped page
            err = ctypes.get_errno()
            if err == errno.ENOSYS:
                self._use_vm = False
            else:
                return self._failed(err)
        return self._pread(address, size)

    def _pread(self, address: int, size: int) -> bytes | None:
        if self._mem_file is None:
            try:
                self._mem_file = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                return self._failed(exc.errno)
        try:
            data = os.pread(self._mem_file, size, address)
        except OSError as exc:
            return self._failed(exc.errno)
        return data if len(data) == size else None

    def _failed(self, err: int):
        if err in (errno.EFAULT, errno.EIO, errno.EINVAL):
            return None
        if err == errno.ESRCH or not os.path.exists(f"/proc/{self.pid}"):
            raise TargetGone(f"process {self.pid} exited while its memory was being read")
        if err in (errno.EPERM, errno.EACCES):
            raise CoroscopeError(permission_message(self.pid))
        raise CoroscopeError(f"reading the memory of pid {self.pid}: {os.strerror(err)}")

    def fresh_chunks(self, regions: list[tuple[int, int]]):
        """Yield (start index, regions' bytes now, concatenated) per IOV_MAX regions, one system
        call each; the bytes are None when a region of the chunk is not mapped.

        The remote iovecs are packed by ``array`` straight from the (address, size) pairs (an
        iovec is two 64-bit words): building 100,000 ctypes structures one by one was most of
        the torn-read check on 10,000 tasks."""
        for i in range(0, len(regions), IOV_MAX):
            chunk = regions[i:i + IOV_MAX]
            words = array("Q", chain.from_iterable(chunk)) if self._use_vm else None
            got = None
            if words is not None and min(words[0::2]) > 0 and max(words[1::2]) <= MAX_READ:
                total = sum(words[1::2])
                buf = ctypes.create_string_buffer(total)
                local = _IOVec(ctypes.cast(buf, ctypes.c_void_p), total)
                remote = (_IOVec * len(chunk)).from_buffer(words)
                self.reads += 1
                if _vm_readv(self.pid, ctypes.byref(local), 1, remote, len(chunk), 0) == total:
                    got = buf.raw
            elif all(0 < a for a, _n in chunk):
                try:
                    got = b"".join(self.fresh(a, n) for a, n in chunk)
                except Unreadable:
                    got = None
            yield i, got

    def cached_concat(self, regions: list[tuple[int, int]]) -> bytes:
        """The regions' bytes as the page cache has them, concatenated (what ``fresh_chunks``
        compares with); raises ``Unreadable`` as ``read`` does."""
        pages, read, out = self.pages, self.read, []
        append = out.append
        for a, n in regions:
            start = a & (PAGE - 1)
            page = pages.get(a - start) if start + n <= PAGE else None
            append(page[start:start + n] if page is not None else read(a, n))
        return b"".join(out)

    def fresh_many(self, regions: list[tuple[int, int]]) -> list[bytes | None]:
        """Each (address, size) as it is now, IOV_MAX regions per system call; None if unmapped."""
        out: list[bytes | None] = []
        for i, raw in self.fresh_chunks(regions):
            chunk = regions[i:i + IOV_MAX]
            if raw is None:
                for a, n in chunk:
                    try:
                        out.append(self.fresh(a, n))
                    except Unreadable:
                        out.append(None)
                continue
            at = 0
            for _a, n in chunk:
                out.append(raw[at:at + n])
                at += n
        return out

    def fresh(self, address: int, size: int) -> bytes:
        """Bytes as they are now (no cache): what the torn-read check compares with."""
        if address <= 0 or size < 0 or size > MAX_READ or address + size >= 1 << 64:
            raise Unreadable(address, "bad address or size")
        return self._direct(address, size)
