"""Planted leak: a pooling client that forgets its socket in one error path.

The server (a thread in the same process, started by ``setup()``) answers "OK" and keeps the
connection, or answers "ERR" to a line starting with "bad" and hangs up. ``Client.request``
takes a pooled connection (opening one when the pool is empty), and when the answer is "ERR"
it raises without closing the connection or taking it out of ``_busy``: one TCP socket in
CLOSE_WAIT per failed request. ``FixedClient`` closes it.

    coroscope leaks --cycles 20 -- examples/leaks/client.py
    coroscope leaks --cycles 20 -- examples/leaks/client.py:cycle_fixed
"""
from __future__ import annotations

import socket
import threading


class RequestFailed(Exception):
    pass


class LineServer:
    """One connection at a time; closes the connection after an ERR answer."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self._thread = threading.Thread(target=self._serve, name="line-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                for line in lines:
                    if line.startswith(b"bad"):
                        conn.sendall(b"ERR\n")
                        break
                    conn.sendall(b"OK\n")

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


class Client:
    def __init__(self, address):
        self.address = address
        self._idle: list[socket.socket] = []
        self._busy: set[socket.socket] = set()

    def _acquire(self) -> socket.socket:
        sock = self._idle.pop() if self._idle else socket.create_connection(self.address)  # PLANTED: socket
        self._busy.add(sock)
        return sock

    def _release(self, sock: socket.socket) -> None:
        self._busy.discard(sock)
        self._idle.append(sock)

    def _failed(self, sock: socket.socket) -> None:
        pass                        # the bug: the dead connection stays in _busy, open

    def request(self, line: str) -> str:
        sock = self._acquire()
        sock.sendall(line.encode() + b"\n")
        reply = sock.recv(64)
        if reply != b"OK\n":
            self._failed(sock)
            raise RequestFailed(reply.decode().strip() or "connection closed")
        self._release(sock)
        return reply.decode().strip()

    def close(self) -> None:
        for sock in self._idle + list(self._busy):
            sock.close()
        self._idle.clear()
        self._busy.clear()


class FixedClient(Client):
    def _failed(self, sock: socket.socket) -> None:
        self._busy.discard(sock)
        sock.close()


_server: LineServer | None = None
_clients: dict[type, Client] = {}


def setup() -> None:
    global _server
    _server = LineServer()


def teardown() -> None:
    for client in _clients.values():
        client.close()
    _clients.clear()
    if _server is not None:
        _server.close()


def one_exchange(client: Client) -> None:
    """One successful request, then one that fails (the error path)."""
    client.request("hello")
    try:
        client.request("bad request")
    except RequestFailed:
        pass


def _client(cls) -> Client:
    if cls not in _clients:
        _clients[cls] = cls(_server.address)
    return _clients[cls]


def cycle() -> None:
    one_exchange(_client(Client))


def cycle_fixed() -> None:
    one_exchange(_client(FixedClient))
