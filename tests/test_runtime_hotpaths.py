"""The runtime's own hot paths, on real sockets: writes, reads, the eventfd, epoll batching, close()."""
from __future__ import annotations

import asyncio
import os
import socket
import threading
import tracemalloc

import pytest

import runtime
from runtime.poller import EVENT_READ, EVENT_WRITE, EpollPoller


def open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the fd listdir itself used
            pass
    return fds


class CountingSocket(socket.socket):
    """A real socket that counts the send calls the transport makes on it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sendmsg_calls = 0
        self.send_calls = 0

    def sendmsg(self, *args):
        self.sendmsg_calls += 1
        return super().sendmsg(*args)

    def send(self, *args):
        self.send_calls += 1
        return super().send(*args)


class Collect(asyncio.Protocol):
    def __init__(self):
        self.chunks: list = []
        self.lost = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.chunks.append(data)

    def connection_lost(self, exc):
        self.lost = True


@pytest.fixture
def loop():
    loop = runtime.new_event_loop()
    yield loop
    loop.close()


def _pair_with_small_buffers():
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours = CountingSocket(fileno=a.detach())
    ours.setblocking(False)
    return ours, b


def _connect(loop, sock):
    return loop.run_until_complete(loop.create_connection(Collect, sock=sock))


@pytest.fixture
def connected(loop):
    """(our counting socket, its peer, the runtime transport, its protocol); closed afterwards."""
    ours, peer = _pair_with_small_buffers()
    transport, protocol = _connect(loop, ours)
    yield ours, peer, transport, protocol
    transport.close()
    loop.run_until_complete(asyncio.sleep(0))
    peer.close()


def _drain(peer: socket.socket, nbytes: int) -> bytes:
    got = bytearray()
    peer.settimeout(5)
    while len(got) < nbytes:
        got += peer.recv(65536)
    return bytes(got)


def test_a_write_goes_out_at_once_and_registers_no_writer(loop, connected):
    ours, peer, transport, _ = connected
    transport.write(b"ping")
    assert ours.send_calls == 1 and transport.get_write_buffer_size() == 0
    assert not loop._selector.get_key(ours.fileno()).events & EVENT_WRITE
    assert _drain(peer, 4) == b"ping"


def test_partial_write_queues_the_rest_registers_the_writer_and_sends_it_all_in_order(loop, connected):
    ours, peer, transport, _ = connected
    payload = bytes(range(256)) * 4096  # 1 MiB: far more than the socket buffers take
    transport.write(payload)
    queued = transport.get_write_buffer_size()
    assert 0 < queued < len(payload)
    assert loop._selector.get_key(ours.fileno()).events & EVENT_WRITE

    received = bytearray()

    def reader():
        received.extend(_drain(peer, len(payload)))

    thread = threading.Thread(target=reader)
    thread.start()
    while transport.get_write_buffer_size():
        loop.run_until_complete(asyncio.sleep(0.001))
    thread.join(10)
    assert bytes(received) == payload
    key = loop._selector.get_map().get(ours.fileno())
    assert key is not None and not key.events & EVENT_WRITE  # the writer left with the queue


def _read_available(peer: socket.socket) -> bytes:
    got = bytearray()
    peer.setblocking(False)
    try:
        while True:
            got += peer.recv(1 << 20)
    except BlockingIOError:
        pass
    return bytes(got)


def test_queued_chunks_leave_in_one_sendmsg(loop, connected):
    ours, peer, transport, _ = connected
    transport.write(b"a" * 50_000)  # fills the socket: the rest is queued (EAGAIN)
    transport.write(b"b" * 10)
    transport.write(bytearray(b"c" * 10))
    transport.write(memoryview(b"d" * 10))
    assert len(transport._buffer) == 4
    received = bytearray()
    most_chunks_in_one_call = 0
    while transport.get_write_buffer_size():
        received += _read_available(peer)  # room for more...
        chunks, calls = len(transport._buffer), ours.sendmsg_calls + ours.send_calls
        transport._write_ready()  # ...and what the loop runs on EPOLLOUT
        assert ours.sendmsg_calls + ours.send_calls == calls + 1  # one syscall per wakeup
        most_chunks_in_one_call = max(most_chunks_in_one_call, chunks - len(transport._buffer))
    assert most_chunks_in_one_call >= 3  # b, c and d (at least) left together
    received += _drain(peer, 50_030 - len(received))
    assert bytes(received) == b"a" * 50_000 + b"b" * 10 + b"c" * 10 + b"d" * 10


def test_writelines_sends_every_buffer_in_one_sendmsg(loop, connected):
    ours, peer, transport, _ = connected
    transport.writelines([b"GET ", bytearray(b"/ "), memoryview(b"HTTP/1.1\r\n\r\n")])
    assert (ours.sendmsg_calls, ours.send_calls) == (1, 0)
    assert _drain(peer, 18) == b"GET / HTTP/1.1\r\n\r\n"


def test_a_written_bytearray_may_be_reused_at_once(loop, connected):
    ours, peer, transport, _ = connected
    transport.write(b"x" * 200_000)
    data = bytearray(b"first")
    transport.write(data)
    data[:] = b"XXXXX"  # the transport must have copied it
    got = bytearray()
    while len(got) < 200_005:
        loop.run_until_complete(asyncio.sleep(0.001))
        peer.setblocking(False)
        try:
            while True:
                got += peer.recv(1 << 20)
        except BlockingIOError:
            pass
    assert bytes(got[-5:]) == b"first"


def test_reads_use_one_reused_buffer_and_hand_out_independent_bytes(loop, connected):
    ours, peer, transport, protocol = connected
    buffer_before = loop._read_buffer
    tracemalloc.start()
    try:
        for message in (b"hello", b"world!"):
            peer.sendall(message)
            while not protocol.chunks or protocol.chunks[-1] != message:
                loop.run_until_complete(asyncio.sleep(0.001))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # asyncio's transport allocates 256 KiB per read; here a read allocates what it received.
    assert peak < 64 * 1024
    assert loop._read_buffer is buffer_before
    assert all(type(chunk) is bytes for chunk in protocol.chunks)
    loop._read_buffer[:16] = b"\0" * 16  # the protocol's data does not alias the buffer
    assert protocol.chunks == [b"hello", b"world!"]


def test_buffered_protocol_gets_its_own_buffer_filled(loop):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(8)
            self.got = bytearray()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.got += self.buf[:nbytes]

    a, peer = socket.socketpair()
    a.setblocking(False)
    transport, protocol = loop.run_until_complete(loop.create_connection(Buffered, sock=a))
    peer.sendall(b"0123456789abcdef")
    while len(protocol.got) < 16:
        loop.run_until_complete(asyncio.sleep(0.001))
    assert bytes(protocol.got) == b"0123456789abcdef"
    transport.close()
    loop.run_until_complete(asyncio.sleep(0))
    peer.close()


def test_the_loop_wakes_through_one_eventfd_and_no_socketpair():
    before = open_fds()
    loop = runtime.new_event_loop()
    try:
        new = {fd: target for fd, target in open_fds().items() if fd not in before}
        assert sorted(new.values()) == ["anon_inode:[eventfd]", "anon_inode:[eventpoll]"]
        done = loop.create_future()
        # The loop sleeps in epoll_wait with nothing else to wake it: only the eventfd can.
        timer = threading.Timer(0.05, loop.call_soon_threadsafe, (done.set_result, "woken"))
        timer.start()
        assert loop.run_until_complete(asyncio.wait_for(done, 10)) == "woken"
        timer.join()
    finally:
        loop.close()
    assert open_fds() == before


def test_interest_changes_undone_before_the_poll_cost_no_syscall():
    poller = EpollPoller()
    a, b = socket.socketpair()
    try:
        poller.register(a, EVENT_READ)
        poller.unregister(a)
        assert poller.select(0) == [] and poller.ctl_calls == 0
        poller.register(a, EVENT_READ)
        poller.select(0)
        assert poller.ctl_calls == 1  # one EPOLL_CTL_ADD, at the poll
        poller.modify(a, EVENT_READ | EVENT_WRITE)
        poller.modify(a, EVENT_READ)
        poller.select(0)
        assert poller.ctl_calls == 1  # write interest added and dropped again: no syscall
        poller.modify(a, EVENT_READ | EVENT_WRITE)
        ready = poller.select(0)
        assert poller.ctl_calls == 2
        assert [(key.fd, mask) for key, mask in ready] == [(a.fileno(), EVENT_WRITE)]
        b.send(b"x")
        ready = poller.select(1)
        assert [(key.fd, mask) for key, mask in ready] == [(a.fileno(), EVENT_READ | EVENT_WRITE)]
    finally:
        poller.close()
        a.close()
        b.close()


def test_one_poll_returns_every_ready_fd():
    poller = EpollPoller()
    pairs = [socket.socketpair() for _ in range(100)]
    try:
        for a, b in pairs:
            poller.register(a, EVENT_READ)
            b.send(b"x")
        assert len(poller.select(1)) == 100
    finally:
        poller.close()
        for a, b in pairs:
            a.close()
            b.close()


def test_an_fd_closed_before_its_registration_reached_the_kernel_is_reported_once():
    poller = EpollPoller()
    a, b = socket.socketpair()
    try:
        fd = a.fileno()
        poller.register(fd, EVENT_READ, "data")
        a.close()  # the batched EPOLL_CTL_ADD will fail with EBADF
        ready = poller.select(0)
        assert [(key.fd, key.data, mask) for key, mask in ready] == [(fd, "data", EVENT_READ)]
        assert poller.select(0) == []  # once, not every iteration
        poller.unregister(fd)
    finally:
        poller.close()
        b.close()


def test_close_closes_every_fd_the_loop_opened_even_with_connections_open(tmp_path):
    before = open_fds()
    loop = runtime.new_event_loop()

    async def scene():
        server = await loop.create_server(Collect, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        await loop.create_connection(Collect, "127.0.0.1", port)
        await loop.create_unix_server(Collect, str(tmp_path / "sock"))
        await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        r, w = os.pipe()
        await loop.connect_read_pipe(asyncio.Protocol, os.fdopen(r, "rb"))
        await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w, "wb"))
        loop.add_signal_handler(10, lambda: None)
        await asyncio.sleep(0.01)
        return server

    loop.run_until_complete(scene())
    assert len(open_fds()) >= len(before) + 10
    loop.remove_signal_handler(10)
    loop.close()  # nothing was closed by the program: the loop closes it all
    assert open_fds() == before


def test_datagrams_are_received_through_the_shared_buffer_as_independent_bytes(loop):
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data.upper(), addr)

    class Client(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = loop.create_future()

        def datagram_received(self, data, addr):
            self.got.set_result(data)

    async def scene():
        server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        client, protocol = await loop.create_datagram_endpoint(
            Client, remote_addr=server.get_extra_info("sockname"))
        client.sendto(b"datagram")
        data = await asyncio.wait_for(protocol.got, 5)
        client.close()
        server.close()
        return data

    data = loop.run_until_complete(scene())
    loop._read_buffer[:16] = b"\0" * 16
    assert data == b"DATAGRAM" and type(data) is bytes


def test_subprocess_pipes_are_read_through_the_shared_buffer(loop):
    async def scene():
        proc = await asyncio.create_subprocess_exec(
            "head", "-c", "300000", "/dev/zero", stdout=asyncio.subprocess.PIPE)
        out = await proc.stdout.read()
        await proc.wait()
        return out

    assert loop.run_until_complete(scene()) == b"\0" * 300000


def test_a_connection_that_never_queues_holds_no_write_queue(loop, connected):
    ours, peer, transport, _ = connected
    transport.write(b"ping")
    assert transport._buffer == () and _drain(peer, 4) == b"ping"
    transport.write(b"x" * (1 << 20))  # more than the socket takes: the rest is queued
    assert type(transport._buffer).__name__ == "deque" and transport.get_write_buffer_size() > 0
    got = bytearray()
    peer.setblocking(False)
    while transport.get_write_buffer_size() or len(got) < 1 << 20:
        loop.run_until_complete(asyncio.sleep(0.001))
        try:
            got += peer.recv(1 << 20)
        except BlockingIOError:
            pass
    assert len(got) == 1 << 20


def test_close_while_the_queue_drains_delivers_it_all_then_loses_the_connection(loop):
    """close() with data queued: the writer keeps draining (3.12's close() clears the writer
    attribute its constructor set), then connection_lost runs and the fd is closed. A write
    after close() is queued behind the rest, as asyncio does."""
    ours, peer = _pair_with_small_buffers()
    transport, protocol = _connect(loop, ours)
    fd = ours.fileno()
    payload = bytes(range(256)) * 2048  # 512 KiB: most of it is queued
    transport.write(payload)
    transport.close()
    transport.write(b"tail")  # still accepted while closing, as asyncio does
    assert transport.is_closing() and transport.get_write_buffer_size() > 0
    received = bytearray()
    thread = threading.Thread(target=lambda: received.extend(_drain(peer, len(payload) + 4)))
    thread.start()
    while protocol.lost is None:
        loop.run_until_complete(asyncio.sleep(0.001))
    thread.join(10)
    assert bytes(received) == payload + b"tail"
    assert ours.fileno() == -1 and fd not in loop._selector.get_map()
    peer.close()
