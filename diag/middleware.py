"""Mark each HTTP request as a coroscope request, with one line of setup.

    app = CoroscopeASGIMiddleware(app)                         # Starlette, FastAPI, any ASGI app
    app.add_middleware(CoroscopeASGIMiddleware)                # or the Starlette/FastAPI way
    web.Application(middlewares=[coroscope_aiohttp_middleware])  # aiohttp

Each request runs inside ``runtime.requests.request("GET /path")``: its id is in a ContextVar
that every task the handler creates inherits, and with tracing on (a target coroscope started,
or ``runtime.tracing.enable()``) the loop writes it into the thread's slot before every step,
so ``coroscope syscalls`` charges the request's syscalls to it. With tracing off a request
costs a ContextVar set and reset. The name is the method and the path *template* where the
framework knows it is not (the raw path would make one name per user id); here the raw path,
cut at the query string, which is what every framework has.
"""
from __future__ import annotations

from runtime.requests import request


def request_name(method: str, path: str) -> str:
    return f"{method} {path.split('?', 1)[0]}"


class CoroscopeASGIMiddleware:
    """ASGI middleware: each ``http`` scope is one request; websocket and lifespan pass through."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        with request(request_name(scope.get("method", "GET"), scope.get("path", "/"))):
            await self.app(scope, receive, send)


try:  # aiohttp is optional: the middleware exists only where aiohttp does
    from aiohttp import web as _web

    @_web.middleware
    async def coroscope_aiohttp_middleware(req, handler):
        with request(request_name(req.method, req.path)):
            return await handler(req)
except ImportError:  # pragma: no cover - aiohttp not installed
    pass
