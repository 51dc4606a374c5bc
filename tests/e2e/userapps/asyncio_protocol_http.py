"""The fastest kind of service there is in Python: a stock asyncio Protocol answering keep-alive
HTTP/1.1 with a fixed response, ``python asyncio_protocol_http.py PORT``. Raw protocol servers
have no framework coroscope could mark requests in, so this one marks them the explicit way
(``runtime.requests.per_data_received``: each data_received is one request). Each request makes
one getppid and one sendto (the transport writes at once when its buffer is empty)."""
import asyncio
import os
import sys

from runtime.requests import per_data_received

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        os.getppid()
        self.transport.write(RESPONSE)


async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(per_data_received(Http, "GET /hello"), "127.0.0.1", port,
                                      backlog=512)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
