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


async def make_app():
    """For gunicorn's aiohttp worker: `gunicorn -k aiohttp.GunicornWebWorker aiohttp_items:make_app`."""
    return init([])
