"""Datagram transports of the runtime, on real UDP sockets on 127.0.0.1."""
from __future__ import annotations

import asyncio
import socket

import runtime


class Collect(asyncio.DatagramProtocol):
    def __init__(self):
        self.received = asyncio.get_running_loop().create_future()
        self.errors = []

    def datagram_received(self, data, addr):
        if not self.received.done():
            self.received.set_result((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)


def test_sendto_without_an_address_goes_to_the_peer_a_socket_was_connected_to():
    async def main():
        loop = asyncio.get_running_loop()
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        try:
            own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            own.bind(("127.0.0.1", 0))
            transport, proto = await loop.create_datagram_endpoint(Collect, sock=own)
            # connected by its owner after the transport was made (asyncio's transport then
            # calls sendto(data, None) and fails with TypeError inside the loop)
            own.connect(peer.getsockname())
            transport.sendto(b"ping")
            data, addr = await loop.sock_recvfrom(peer, 100)
            assert data == b"ping" and addr == transport.get_extra_info("sockname")
            assert proto.errors == []
            transport.close()
        finally:
            peer.close()
    runtime.run(main())
