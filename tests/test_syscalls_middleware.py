"""The request-marking middlewares: every HTTP request runs inside its own coroscope request."""
from __future__ import annotations

import asyncio

from diag.middleware import CoroscopeASGIMiddleware, request_name
from runtime.requests import current_request


def test_asgi_middleware_marks_http_requests_only():
    seen = []

    async def app(scope, receive, send):
        seen.append((scope["type"], current_request()))

    mw = CoroscopeASGIMiddleware(app)

    async def main():
        for path in ("/a", "/b?x=1"):
            await mw({"type": "http", "method": "GET", "path": path}, None, None)
        await mw({"type": "lifespan"}, None, None)

    asyncio.run(main())
    (t1, r1), (t2, r2), (t3, r3) = seen
    assert t1 == t2 == "http" and r1 and r2 and r1 != r2
    assert (t3, r3) == ("lifespan", 0)
    assert current_request() == 0
    assert request_name("GET", "/b?x=1") == "GET /b"


def test_aiohttp_middleware_on_a_real_socket():
    from aiohttp import ClientSession, web

    from diag.middleware import coroscope_aiohttp_middleware

    ids = []

    async def handler(req):
        ids.append(current_request())
        return web.Response(text="ok")

    async def main():
        app = web.Application(middlewares=[coroscope_aiohttp_middleware])
        app.router.add_get("/x", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with ClientSession() as s:
                for _ in range(3):
                    async with s.get(f"http://127.0.0.1:{port}/x") as resp:
                        assert await resp.text() == "ok"
        finally:
            await runner.cleanup()

    asyncio.run(main())
    assert len(ids) == 3 and all(ids) and len(set(ids)) == 3
