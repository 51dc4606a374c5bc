"""An aiohttp service as its users write one: ``python aiohttp_plain.py PORT``, on asyncio's own
loop, no access log, no coroscope import. Each request makes one getppid, and aiohttp writes the
response with one sendto."""
import os
import sys

from aiohttp import web


async def hello(request):
    os.getppid()
    return web.Response(text="ok")


app = web.Application()
app.router.add_get("/hello", hello)

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
