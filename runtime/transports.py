"""Socket transports that read into one reused buffer and write with as few syscalls as possible.

asyncio's stream transport reads with ``sock.recv(262144)``: CPython allocates a 256 KiB bytes
object for every read, glibc serves an allocation that large with mmap, the result is shrunk to
what arrived (mremap) and freed (munmap): three syscalls per read that do no I/O. Here every
transport of a loop reads with ``recv_into`` one buffer the loop allocated once, and hands the
protocol a ``bytes`` copy of just what arrived (``data_received`` needs an object it may keep).
A ``BufferedProtocol`` gets its own buffer filled directly, as in asyncio.

Writes: ``write()`` tries ``send`` at once; only what the kernel did not take is queued and only
then is the writer registered (EAGAIN is the one reason to wait for EPOLLOUT). The queue is a
deque of immutable chunks, not one bytearray that every write copies into, so that when the
socket becomes writable all of them leave in one ``sendmsg`` (``writelines`` goes the same way
even before anything is queued).

The datagram transport keeps asyncio's logic but receives with ``recvfrom_into`` the same buffer.
"""
from __future__ import annotations

import collections
import socket
from asyncio import selector_events

_IOV_MAX = 1024  # Linux UIO_MAXIOV: sendmsg takes at most this many buffers


def _frozen(data) -> bytes:
    """An immutable copy of data unless it is immutable already (the caller may reuse a bytearray)."""
    if type(data) is bytes:
        return data
    if (type(data) is memoryview and type(data.obj) is bytes and data.format == "B"
            and data.c_contiguous):
        return data  # a view of immutable bytes, counted in bytes
    return bytes(data)


class StreamTransport(selector_events._SelectorSocketTransport):
    # _buffer: the empty tuple until something is first queued (most connections never queue
    # anything, and an empty deque costs 760 bytes: 7 MB at 10,000 connections), then a deque of
    # bytes/memoryview chunks not yet sent, oldest first; never holds an empty chunk.
    # _buffer_size: their total length in bytes. Non-empty iff the writer is registered (or the
    # connection is being torn down).
    _buffer_factory = tuple  # see _queue()

    _buffered_reads = False  # the protocol is a BufferedProtocol (set by set_protocol)

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        self._buffer_size = 0
        self._read_view = loop._receive_view()  # the loop's shared receive buffer
        super().__init__(loop, sock, protocol, waiter, extra, server)
        # From 3.12 asyncio's constructor makes its own write queue (a deque, whatever
        # _buffer_factory says) and stores its sendmsg writer on the instance, which would
        # shadow _write_ready below: this transport keeps its own of both, on every version.
        # (3.12's close() sets that attribute to None again; by then the writer, if one is
        # registered, holds the bound method, and a write that would register one is refused.)
        self._buffer = ()
        # del, not self.__dict__.pop: touching __dict__ gives the instance a real dict in place
        # of its inline values, and CPython 3.11-3.13 then specialise no read of its attributes
        try:
            del self._write_ready
        except AttributeError:  # 3.11: asyncio's constructor stores none
            pass

    # -- reading ----------------------------------------------------------------------------
    def set_protocol(self, protocol):
        self._buffered_reads = isinstance(protocol, selector_events.protocols.BufferedProtocol)
        super().set_protocol(protocol)

    def _read_ready__data_received(self):
        # Registered as the reader itself (_read_ready below), not behind asyncio's _read_ready,
        # which only calls _read_ready_cb: one Python call less per read.
        if self._buffered_reads:
            self._read_ready__get_buffer()
            return
        if self._conn_lost:
            return
        view = self._read_view
        try:
            nbytes = self._sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        if not nbytes:
            self._read_ready__on_eof()
            return
        data = bytes(view[:nbytes])
        try:
            self._protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    _read_ready = _read_ready__data_received

    # -- writing ----------------------------------------------------------------------------
    def get_write_buffer_size(self):
        return self._buffer_size

    def _check_writable(self, data) -> bool:
        """asyncio's checks before a write; False when the write is to be dropped silently."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to write; sendfile is in progress")
        if self._conn_lost:
            if self._conn_lost >= selector_events.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                selector_events.logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return False
        return True

    def write(self, data):
        # The common case first: bytes, nothing queued, nothing unusual. One send, no copies.
        if (type(data) is bytes and not self._buffer and not self._eof and not self._conn_lost
                and self._empty_waiter is None and data):
            try:
                n = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on socket transport")
                return
            if n == len(data):
                return
            self._loop._add_writer(self._sock_fd, self._write_ready)
            chunk = memoryview(data)[n:] if n else data  # bytes are immutable: no copy needed
            self._queue().append(chunk)
            self._buffer_size += len(chunk)
            self._maybe_pause_protocol()
            return
        self._write_other(data)

    def _write_other(self, data):
        if not self._check_writable(data) or not data:
            return
        if type(data) is memoryview and data.format != "B":
            data = data.cast("B")  # lengths below are in bytes
        if not self._buffer:
            try:
                n = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on socket transport")
                return
            if n == len(data):
                return
            data = memoryview(data)[n:] if n else data
            self._loop._add_writer(self._sock_fd, self._write_ready)
        chunk = _frozen(data)
        self._queue().append(chunk)
        self._buffer_size += len(chunk)
        self._maybe_pause_protocol()

    def writelines(self, list_of_data):
        chunks = []
        for data in list_of_data:
            if not self._check_writable(data):
                return
            if data:
                chunks.append(_frozen(data))
        if not chunks:
            return
        was_empty = not self._buffer
        self._queue().extend(chunks)
        self._buffer_size += sum(map(len, chunks))
        if was_empty:
            if not self._send_buffered():
                return
            if self._buffer:
                self._loop._add_writer(self._sock_fd, self._write_ready)
        self._maybe_pause_protocol()

    def _queue(self) -> collections.deque:
        """The write queue, made on first use."""
        if type(self._buffer) is tuple:
            self._buffer = collections.deque()
        return self._buffer

    def _send_buffered(self) -> bool:
        """One sendmsg of as much of the queue as it takes; False after a fatal error."""
        buffer = self._buffer
        try:
            if len(buffer) == 1:
                n = self._sock.send(buffer[0])
            else:
                n = self._sock.sendmsg(
                    buffer if len(buffer) <= _IOV_MAX else list(buffer)[:_IOV_MAX])
        except (BlockingIOError, InterruptedError):
            return True
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._buffer_size = 0
            buffer.clear()
            self._fatal_error(exc, "Fatal write error on socket transport")
            if self._empty_waiter is not None:
                self._empty_waiter.set_exception(exc)
            return False
        self._buffer_size -= n
        while n:
            head = buffer[0]
            if n >= len(head):
                n -= len(head)
                buffer.popleft()
            else:
                buffer[0] = memoryview(head)[n:]
                n = 0
        return True

    def _write_ready(self):
        assert self._buffer, "Data should not be empty"
        if self._conn_lost:
            return
        if not self._send_buffered():
            self._loop._remove_writer(self._sock_fd)
            return
        self._maybe_resume_protocol()  # may write more
        if not self._buffer:
            self._loop._remove_writer(self._sock_fd)
            if self._empty_waiter is not None:
                self._empty_waiter.set_result(None)
            if self._closing:
                self._call_connection_lost(None)
            elif self._eof:
                self._sock.shutdown(socket.SHUT_WR)

    def _force_close(self, exc):
        self._buffer_size = 0
        super()._force_close(exc)

    def _call_connection_lost(self, exc):
        fd = self._sock_fd
        sock, loop = self._sock, self._loop
        super()._call_connection_lost(exc)
        if sock is not None:
            loop._forget_fd(fd)


class DatagramTransport(selector_events._SelectorDatagramTransport):
    def sendto(self, data, addr=None):
        # A socket connected after the transport was made (or handed over unconnected and
        # connected by its owner) has a peer the transport does not know: asyncio then calls
        # sock.sendto(data, None) and fails inside the loop with TypeError. uvloop sends to the
        # connected peer, and so do we: the peer is looked up once, when first needed.
        if addr is None and self._address is None and not self._extra.get("peername"):
            try:
                self._extra["peername"] = self._sock.getpeername()
            except OSError:
                pass
        super().sendto(data, addr)

    def _read_ready(self):
        if self._conn_lost:
            return
        view = self._loop._receive_view()
        try:
            nbytes, addr = self._sock.recvfrom_into(view)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._protocol.error_received(exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on datagram transport")
        else:
            self._protocol.datagram_received(bytes(view[:nbytes]), addr)

    def _call_connection_lost(self, exc):
        fd = self._sock_fd
        sock, loop = self._sock, self._loop
        super()._call_connection_lost(exc)
        if sock is not None:
            loop._forget_fd(fd)
