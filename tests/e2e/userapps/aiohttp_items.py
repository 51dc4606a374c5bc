"""An aiohttp service run with `python -m aiohttp.web ... aiohttp_items:init`: no coroscope import."""
import os

from aiohttp import web


async def item(request):
    os.getppid()
    return web.Response(text=request.match_info["n"])


def init(argv):
    app = web.Application()
    app.router.add_get("/items/{n}", item)
    return app
