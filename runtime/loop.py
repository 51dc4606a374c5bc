"""The coroscope event loop: asyncio's Unix selector loop with its hot paths replaced.

What is inherited, and why: asyncio's ``_UnixSelectorEventLoop`` already implements the whole
loop API on top of a ``selectors`` object (servers, connections, ``sock_*``, datagrams, UNIX
sockets, subprocesses, signals, sendfile, TLS, debug mode) and user code and libraries rely on
its exact behaviour. Re-implementing that would only add bugs. What is replaced is where the
syscalls and the time per request go:

- the poller (``runtime.poller``): epoll with persistent registration and interest changes
  batched until the next poll, instead of one ``epoll_ctl`` per change;
- the stream and datagram transports (``runtime.transports``): reads into one reused buffer,
  writes tried at once, queued chunks leaving in one ``sendmsg``;
- the self-pipe: ``call_soon_threadsafe`` wakes the loop through one eventfd (8-byte counter,
  one fd) instead of a socketpair (two fds). Signals still need a byte stream, because
  ``signal.set_wakeup_fd`` writes the signal number as one byte; that socketpair is created only
  when the first signal handler is added;
- ``_run_once``: the same algorithm as asyncio's, with the tracepoints of ``runtime.tracing``,
  running the loop's own handles without a ``Handle._run`` frame each;
- ``call_soon``, ``call_later``, ``call_at``, ``create_task``: asyncio's, written out instead of
  wrapped, handles built without asyncio's per-handle debug-mode calls (debug mode itself takes
  asyncio's own path). A wrapper or a helper call per callback is what made the runtime slower
  than asyncio on callback-heavy work (``benchmarks.micro``), whatever it saved in syscalls.

Ownership of fds: the loop records every fd it owns (its epoll fd and eventfd, the signal
socketpair, every socket it serves on or wraps in a transport, every pipe it wraps) and
``close()`` closes those still open, so a loop that is closed leaves no fd behind, whatever its
transports were doing. Each of those fds is announced with ``TRACE.fd_open`` when the loop takes
it and ``TRACE.fd_close`` when it closes it.
"""
from __future__ import annotations

import contextvars
import heapq
import os
import socket
import weakref
from asyncio import base_events, events as _events, tasks as _tasks, unix_events

from . import accel, asyncio_versions
from .poller import EpollPoller
from . import tracing
from .tracing import TRACE
from .transports import DatagramTransport, StreamTransport

_READ_BUFFER_SIZE = 256 * 1024  # as asyncio's max_size: one read takes at most this much
# COROSCOPE_TRACE as the process had it when the runtime was imported: looking it up in
# os.environ on every Loop() cost 8,000 instructions, 4% of making, running and closing one.
_TRACE_FROM_ENV = bool(os.environ.get("COROSCOPE_TRACE"))
_MIN_SCHEDULED_TIMER_HANDLES = base_events._MIN_SCHEDULED_TIMER_HANDLES
_MIN_CANCELLED_TIMER_HANDLES_FRACTION = base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION
_MAXIMUM_SELECT_TIMEOUT = base_events.MAXIMUM_SELECT_TIMEOUT
_format_handle = base_events._format_handle
_format_callback_source = base_events.events.format_helpers._format_callback_source
_heappush = heapq.heappush
_heappop = heapq.heappop
_copy_context = contextvars.copy_context
_Handle = _events.Handle
_TimerHandle = _events.TimerHandle
_new_handle = object.__new__
# asyncio's internals on this CPython (runtime.asyncio_versions: the one table keyed by version).
_ASYNCIO = asyncio_versions.CURRENT
_logger = base_events.logger


def _report_callback_error(handle, exc) -> None:
    """What Handle._run does when its callback raises: the loop's exception handler hears of it."""
    context = {
        "message": f"Exception in callback {_format_callback_source(handle._callback, handle._args)}",
        "exception": exc,
        "handle": handle,
    }
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    handle._loop.call_exception_handler(context)


class _ReadPipeTransport(unix_events._UnixReadPipeTransport):
    """Reads into the loop's buffer, as the stream transport does (asyncio: os.read(fd, 256 KiB))."""

    def _read_ready(self):
        view = self._loop._receive_view()
        try:
            nbytes = os.readv(self._fileno, [view])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on pipe transport")
            return
        if nbytes:
            self._protocol.data_received(bytes(view[:nbytes]))
            return
        if self._loop.get_debug():
            _logger.info("%r was closed by peer", self)
        self._closing = True
        self._loop._remove_reader(self._fileno)
        self._loop.call_soon(self._protocol.eof_received)
        self._loop.call_soon(self._call_connection_lost, None)

    def _call_connection_lost(self, exc):
        fd, loop = self._fileno, self._loop
        super()._call_connection_lost(exc)
        loop._forget_fd(fd)


class _WritePipeTransport(unix_events._UnixWritePipeTransport):
    def _call_connection_lost(self, exc):
        fd, loop = self._fileno, self._loop
        super()._call_connection_lost(exc)
        loop._forget_fd(fd)


class Loop(unix_events._UnixSelectorEventLoop):
    """The runtime's event loop. ``selector`` is accepted for asyncio compatibility and ignored:
    this loop always polls with its own epoll poller."""

    # asyncio's attributes that every call_soon, timer and cancel reads, kept in slots (set by
    # BaseEventLoop.__init__ as before): runtime._speedups reads them at their offsets instead
    # of looking them up by name, and Python reads a slot as fast as an instance attribute.
    __slots__ = ("_debug", "_closed", "_ready", "_scheduled", "_timer_cancelled_count")

    def __init__(self, selector=None):
        if selector is not None and hasattr(selector, "close"):
            selector.close()  # we own fds we were handed and will not use
        # fd -> socket or pipe file object the loop owns (see the module docstring). Weak: a
        # transport collected without close() takes its socket with it, as in asyncio. Made by
        # the first _own: a loop that owns nothing (asyncio.run of a computation) does not pay
        # for a WeakValueDictionary and its iteration at close.
        self._owned: weakref.WeakValueDictionary[int, object] | None = None
        self._eventfd = -1  # the wakeup eventfd; -1 once closed
        self._wakeup_file = None  # FileIO over _eventfd, so other threads see it closed safely
        self._read_buffer = self._read_view = None  # see _receive_view
        # runtime.run() and new_event_loop() honour COROSCOPE_TRACE in a process the start-up
        # hook did not switch on (an interpreter without coroscope installed)
        if _TRACE_FROM_ENV and not TRACE.on:
            tracing.enable_from_env(loop_kind="runtime")
        super().__init__(EpollPoller())

    def run_forever(self):
        # the header names the loop that runs (diag.instrument's stock loops do the same), not
        # the one COROSCOPE_LOOP asked for nor the last one made
        if TRACE.on and (probe := tracing.writer()) is not None:
            probe.set_loop_kind("runtime")
        return super().run_forever()

    # One receive buffer shared by this loop's transports (reads are synchronous, and the
    # protocol receives a copy, so one suffices), made when the first transport asks for it: a
    # loop that never reads (asyncio.run of a computation) does not pay 256 KiB for it. A
    # method, not __getattr__ (which slows every attribute read) nor functools.cached_property:
    # that one writes into ``__dict__``, which makes CPython give the instance a real dict in
    # place of its inline attribute values, and on 3.11 to 3.13 no read of an attribute kept in
    # such a dict is specialised: every read of the loop's attributes (``_stopping``,
    # ``_selector``...) would take the generic lookup, a few hundred instructions an iteration.
    def _receive_view(self) -> memoryview:
        view = self._read_view
        if view is None:
            self._read_buffer = bytearray(_READ_BUFFER_SIZE)
            view = self._read_view = memoryview(self._read_buffer)
        return view

    # -- the wakeup eventfd and the signal socketpair ---------------------------------------
    def _make_self_pipe(self):
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        if TRACE.on:
            TRACE.fd_open(fd, "eventfd")
        self._eventfd = fd
        self._wakeup_file = open(fd, "r+b", buffering=0, closefd=True)
        self._ssock = self._csock = None  # the signal socketpair, made on first use
        self._internal_fds += 1
        self._add_reader(fd, self._read_from_self)

    def _read_from_self(self):
        try:
            os.eventfd_read(self._eventfd)
        except (BlockingIOError, InterruptedError, ValueError):
            pass

    def _write_to_self(self):
        # May run in another thread, even while close() runs: the file object turns a closed
        # fd into ValueError instead of writing to whatever reused the number.
        wakeup = self._wakeup_file
        if wakeup is None:
            return
        try:
            os.eventfd_write(wakeup.fileno(), 1)
        except (OSError, ValueError):
            if self._debug:
                _logger.debug("Fail to write to the wakeup eventfd", exc_info=True)

    def _make_signal_pipe(self):
        self._ssock, self._csock = socket.socketpair()
        self._ssock.setblocking(False)
        self._csock.setblocking(False)
        if TRACE.on:
            TRACE.fd_open(self._ssock.fileno(), "socket")
            TRACE.fd_open(self._csock.fileno(), "socket")
        self._internal_fds += 1
        self._add_reader(self._ssock.fileno(), self._read_signals)

    def _read_signals(self):
        while True:
            try:
                data = self._ssock.recv(4096)
            except InterruptedError:
                continue
            except BlockingIOError:
                break
            if not data:
                break
            self._process_self_data(data)

    def add_signal_handler(self, sig, callback, *args):
        if self._ssock is None and not self.is_closed():
            self._check_signal(sig)
            self._make_signal_pipe()
        return super().add_signal_handler(sig, callback, *args)

    def _close_self_pipe(self):
        self._remove_reader(self._eventfd)
        wakeup, self._wakeup_file = self._wakeup_file, None
        fd, self._eventfd = self._eventfd, -1
        wakeup.close()
        if TRACE.on:
            TRACE.fd_close(fd)
        self._internal_fds -= 1
        if self._ssock is not None:
            self._remove_reader(self._ssock.fileno())
            for sock in (self._ssock, self._csock):
                sock_fd = sock.fileno()
                sock.close()
                if TRACE.on:
                    TRACE.fd_close(sock_fd)
            self._ssock = self._csock = None
            self._internal_fds -= 1

    # -- fds the loop owns ------------------------------------------------------------------
    def _own(self, fd: int, obj, kind: str) -> None:
        owned = self._owned
        if owned is None:
            owned = self._owned = weakref.WeakValueDictionary()
        owned[fd] = obj
        if TRACE.on:
            TRACE.fd_open(fd, kind)

    def _forget_fd(self, fd: int) -> None:
        """A transport closed its fd: it is no longer ours to close."""
        owned = self._owned
        if owned is not None and owned.pop(fd, None) is not None and TRACE.on:
            TRACE.fd_close(fd)

    def _close_owned(self) -> None:
        if not self._owned:
            return
        for fd, obj in list(self._owned.items()):
            try:
                if obj.fileno() < 0:
                    continue
            except ValueError:  # a closed file object
                continue
            if fd in self._selector.get_map():
                self._selector.unregister(fd)
            obj.close()
            if TRACE.on:
                TRACE.fd_close(fd)
        self._owned.clear()

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        self._close_owned()
        super().close()

    # -- transports -------------------------------------------------------------------------
    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        if _ASYNCIO.transports_check_fd:
            self._ensure_fd_no_transport(sock)
        self._own(sock.fileno(), sock, "socket")
        return StreamTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None, *,
                            server_side=False, server_hostname=None, extra=None, server=None,
                            ssl_handshake_timeout=base_events.constants.SSL_HANDSHAKE_TIMEOUT,
                            ssl_shutdown_timeout=base_events.constants.SSL_SHUTDOWN_TIMEOUT):
        if _ASYNCIO.transports_check_fd:
            self._ensure_fd_no_transport(rawsock)
        ssl_protocol = base_events.sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        self._own(rawsock.fileno(), rawsock, "socket")
        StreamTransport(self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        if _ASYNCIO.transports_check_fd:
            self._ensure_fd_no_transport(sock)
        self._own(sock.fileno(), sock, "socket")
        return DatagramTransport(self, sock, protocol, address, waiter, extra)

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        transport = _ReadPipeTransport(self, pipe, protocol, waiter, extra)
        self._own(transport._fileno, pipe, "pipe")
        return transport

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        transport = _WritePipeTransport(self, pipe, protocol, waiter, extra)
        self._own(transport._fileno, pipe, "pipe")
        return transport

    def _start_serving(self, protocol_factory, sock, *args, **kwargs):
        self._own(sock.fileno(), sock, "socket")
        super()._start_serving(protocol_factory, sock, *args, **kwargs)

    def _stop_serving(self, sock):
        fd = sock.fileno()
        super()._stop_serving(sock)
        self._forget_fd(fd)

    # -- tracepoints around inherited operations ---------------------------------------------
    def create_task(self, coro, *, name=None, context=None):
        # asyncio's, written out rather than wrapped (a wrapper costs a frame per task).
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._task_factory is None:
            task = _tasks.Task(coro, loop=self, name=name, context=context)
            if task._source_traceback:
                del task._source_traceback[-1]
        else:
            if context is None:
                task = self._task_factory(self, coro)
            else:
                task = self._task_factory(self, coro, context=context)
            if name is not None:       # as asyncio does: 3.13 dropped tasks._set_task_name
                task.set_name(name)
        if TRACE.on:
            TRACE.task_create(task)
        return task

    # call_soon, call_later and call_at: asyncio's, written out. asyncio's call_soon makes three
    # Python calls besides the handle's own construction (_check_closed, _call_soon, and
    # get_debug inside Handle.__init__), a wrapper around super().call_at() adds a frame and a
    # super() per timer: that was the runtime's deficit on the call_soon, spawn-and-await (every
    # task step is a call_soon) and timers benchmarks. Outside debug mode the handle is built
    # here, field by field, as Handle.__init__ would build it (the fields are _ASYNCIO.handle_fields
    # and timer_fields; a test compares them with asyncio's own handles). Debug mode takes
    # asyncio's own path, so its checks and source tracebacks are exactly asyncio's.
    def call_soon(self, callback, *args, context=None):
        if self._debug:
            handle = super().call_soon(callback, *args, context=context)
            if handle._source_traceback:
                del handle._source_traceback[-1]
            return handle
        if self._closed:
            raise RuntimeError("Event loop is closed")
        handle = _new_handle(_Handle)
        handle._context = _copy_context() if context is None else context
        handle._loop = self
        handle._callback = callback
        handle._args = args
        handle._cancelled = False
        handle._repr = None
        handle._source_traceback = None
        self._ready.append(handle)
        return handle

    def call_later(self, delay, callback, *args, context=None):
        if delay is None:
            raise TypeError("delay must not be None")
        timer = self.call_at(self.time() + delay, callback, *args, context=context)
        if timer._source_traceback:
            del timer._source_traceback[-1]
        return timer

    def call_at(self, when, callback, *args, context=None):
        if when is None:
            raise TypeError("when cannot be None")
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
            timer = _events.TimerHandle(when, callback, args, self, context)
            if timer._source_traceback:
                del timer._source_traceback[-1]
        else:
            timer = _new_handle(_TimerHandle)
            timer._context = _copy_context() if context is None else context
            timer._loop = self
            timer._callback = callback
            timer._args = args
            timer._cancelled = False
            timer._repr = None
            timer._source_traceback = None
            timer._when = when
        _heappush(self._scheduled, timer)
        timer._scheduled = True
        if TRACE.on:
            TRACE.timer_add(timer)
        return timer

    def run_in_executor(self, executor, func, *args):
        future = super().run_in_executor(executor, func, *args)
        if TRACE.on:
            TRACE.executor_submit(future)
            future.add_done_callback(TRACE.executor_done)
        return future

    def _add_reader(self, fd, callback, *args):
        handle = super()._add_reader(fd, callback, *args)
        if TRACE.on:
            TRACE.io_register(fd if isinstance(fd, int) else fd.fileno(), 1)
        return handle

    def _remove_reader(self, fd):
        removed = super()._remove_reader(fd)
        if removed and TRACE.on:
            TRACE.io_unregister(fd if isinstance(fd, int) else fd.fileno(), 1)
        return removed

    def _add_writer(self, fd, callback, *args):
        handle = super()._add_writer(fd, callback, *args)
        if TRACE.on:
            TRACE.io_register(fd if isinstance(fd, int) else fd.fileno(), 4)
        return handle

    def _remove_writer(self, fd):
        removed = super()._remove_writer(fd)
        if removed and TRACE.on:
            TRACE.io_unregister(fd if isinstance(fd, int) else fd.fileno(), 4)
        return removed

    # -- one iteration ----------------------------------------------------------------------
    def _process_events(self, event_list):
        ready = self._ready
        for key, mask in event_list:
            # key[3], not key.data: a namedtuple's field is a descriptor CPython does not
            # specialise the read of; an index into a tuple it does
            reader, writer = key[3]
            if mask & 1 and reader is not None:
                if reader._cancelled:
                    self._remove_reader(key.fileobj)
                else:
                    ready.append(reader)
            if mask & 2 and writer is not None:
                if writer._cancelled:
                    self._remove_writer(key.fileobj)
                else:
                    ready.append(writer)

    def _drop_cancelled_timers(self) -> None:
        scheduled = self._scheduled
        count = len(scheduled)
        if (count > _MIN_SCHEDULED_TIMER_HANDLES
                and self._timer_cancelled_count / count > _MIN_CANCELLED_TIMER_HANDLES_FRACTION):
            tracing = TRACE.on
            kept = []
            for handle in scheduled:
                if handle._cancelled:
                    handle._scheduled = False
                    if tracing:
                        TRACE.timer_cancel(handle)
                else:
                    kept.append(handle)
            heapq.heapify(kept)
            self._scheduled = kept
            self._timer_cancelled_count = 0
        else:
            while scheduled and scheduled[0]._cancelled:
                self._timer_cancelled_count -= 1
                handle = heapq.heappop(scheduled)
                handle._scheduled = False
                if TRACE.on:
                    TRACE.timer_cancel(handle)

    def _run_once(self):
        """asyncio's iteration: drop cancelled timers, poll, move due timers to the ready queue,
        run the callbacks that were ready when the iteration began (not those they schedule)."""
        scheduled = self._scheduled
        if scheduled and (scheduled[0]._cancelled or self._timer_cancelled_count):
            self._drop_cancelled_timers()
            scheduled = self._scheduled
        ready = self._ready

        if ready or self._stopping:
            timeout = 0
        elif scheduled:
            timeout = min(max(0, scheduled[0]._when - self.time()), _MAXIMUM_SELECT_TIMEOUT)
        else:
            timeout = None

        tracing = TRACE.on
        event_list = self._selector.select(timeout)
        if event_list:
            self._process_events(event_list)

        if scheduled:
            end_time = self.time() + self._clock_resolution
            while scheduled:
                handle = scheduled[0]
                if handle._when >= end_time:
                    break
                handle = heapq.heappop(scheduled)
                handle._scheduled = False
                ready.append(handle)
                if tracing:
                    TRACE.timer_fire(handle)

        # The only place callbacks are called. Popping a counted number is thread-safe
        # without a lock (other threads only append).
        ntodo = len(ready)
        if tracing:
            # The iteration's record; then, but in debug mode, the tracer runs the handles.
            TRACE.iteration(event_list, ready, ntodo, None if self._debug else _report_callback_error)
        event_list = None  # break cycles when an exception occurs
        if self._debug:
            self._run_ready_debug(ntodo, tracing)
        elif not tracing:
            _run_ready(ready, ntodo, _report_callback_error)

    def _run_ready_debug(self, ntodo: int, tracing: bool) -> None:
        ready = self._ready
        for _ in range(ntodo):
            handle = ready.popleft()
            if handle._cancelled:
                continue
            try:
                self._current_handle = handle
                t0 = self.time()
                if tracing:
                    TRACE.run_handle(handle, _report_callback_error)
                else:
                    handle._run()
                dt = self.time() - t0
                if dt >= self.slow_callback_duration:
                    _logger.warning("Executing %s took %.3f seconds", _format_handle(handle), dt)
            finally:
                self._current_handle = None
        handle = None


def _run_ready(ready, ntodo, report_error) -> None:
    """Run the first ``ntodo`` ready handles: Handle._run() inlined for the loop's own handle
    classes (a Python frame per callback is a measurable share of a short callback); any other
    class, say a subclass with its own _run, is run through it. runtime._speedups.run_ready is
    this in C (runtime.accel chooses)."""
    popleft = ready.popleft
    for _ in range(ntodo):
        handle = popleft()
        if handle._cancelled:
            continue
        if type(handle) is _Handle or type(handle) is _TimerHandle:
            try:
                handle._context.run(handle._callback, *handle._args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                report_error(handle, exc)
        else:
            handle._run()
    handle = None  # break cycles when an exception occurs


# The C accelerator or the Python paths above: runtime.accel decides, here only.
_run_ready = accel.choose(Loop, _run_ready, TRACE)


class EventLoopPolicy(unix_events._UnixDefaultEventLoopPolicy):
    """asyncio's Unix policy (child watchers included) making runtime loops."""

    _loop_factory = Loop
