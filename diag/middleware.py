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

With tracing on, uvicorn, hypercorn and aiohttp's server mark requests themselves, with route
templates and no code change (diag.autoinstrument); these middlewares then let a request through
unmarked a second time.
"""
from __future__ import annotations

from runtime.requests import request

# the mark diag.autoinstrument leaves too: a request is marked once, by whichever comes first
from diag.autoinstrument import MARK


def request_name(method: str, path: str) -> str:
    return f"{method} {path.split('?', 1)[0]}"


class CoroscopeASGIMiddleware:
    """ASGI middleware: each ``http`` scope is one request; websocket and lifespan pass through."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or MARK in scope:
            await self.app(scope, receive, send)
            return
        r = request(request_name(scope.get("method", "GET"), scope.get("path", "/")))
        scope[MARK] = r
        with r:
            await self.app(scope, receive, send)


try:  # aiohttp is optional: the middleware exists only where aiohttp does
    from aiohttp import web as _web

    @_web.middleware
    async def coroscope_aiohttp_middleware(req, handler):
        if req.get(MARK) is not None:
            return await handler(req)
        r = request(request_name(req.method, req.path))
        req[MARK] = r
        with r:
            return await handler(req)
except ImportError:  # pragma: no cover - aiohttp not installed
    pass
