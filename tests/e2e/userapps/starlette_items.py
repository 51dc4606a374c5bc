"""A Starlette service served by hypercorn: no coroscope import, nothing printed."""
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def item(request):
    os.getppid()
    return PlainTextResponse(request.path_params["n"])


app = Starlette(routes=[Route("/items/{n}", item)])
