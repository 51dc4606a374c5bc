"""Requests marked in web servers with no code change, whenever tracing is on.

opentelemetry-instrument and ddtrace-run instrument uvicorn, Starlette and aiohttp without a
line of the user's code changing; a user of coroscope expects the same. The start-up hook
(diag.bootstrap.startup) calls ``install_from_env()`` in every process where COROSCOPE_TRACE is
set, before the user's code imports anything. Nothing is imported then: a post-import hook (an
entry on ``sys.meta_path`` that only recognises the module names below, so every other import
costs one dict lookup) patches each server module right after it executes, before anyone has
taken a reference to what we patch.

Where the request is, per server:

    uvicorn     uvicorn.config.Config.load wraps the application it loads (``uvicorn app:app``,
                ``uvicorn.run(app)``, gunicorn's UvicornWorker, which loads through Config too)
    hypercorn   hypercorn.utils.wrap_app wraps an ASGI application (hypercorn's command line
                loads through it, and so does ``hypercorn.asyncio.serve``)
    aiohttp     aiohttp.web_protocol.RequestHandler._handle_request: the task that runs the
                handler *and* writes the response (aiohttp writes a returned Response after the
                application's middlewares have returned, so a middleware would miss the write)

An ASGI ``http`` scope is one request from the first byte the application sees to the last one
it sends, streaming bodies and background tasks included. Names are "METHOD route" with the route
template the framework matched, so names stay few and carry no ids: the route is known only
after the application has routed, so the request begins named by its method and takes its route
name when it ends (``runtime.requests.request`` allows a rename; the end record carries it).
Starlette and everything built on it (FastAPI) leave the matched route in ``scope["route"]``;
aiohttp leaves it in the request's match_info. An application that does not route that way (a
bare ASGI callable, Quart) is named by its raw path, cut at the query string, as the explicit
middlewares do. A request that matched no route is "METHOD (no route)" where the framework
routes, so a scan of random paths makes one name, not thousands.

The explicit middlewares (diag.middleware) stay for users who prefer code; the two never mark
one request twice, because each marks the scope (or aiohttp request) it marked, and each looks
for that mark first.
"""
from __future__ import annotations

import importlib.abc
import os
import sys

from runtime.requests import request
from runtime.tracing import TRACE

# the key under which a marked ASGI scope or aiohttp request holds its coroscope request
MARK = "coroscope.request"
NO_ROUTE = "(no route)"

_TRUE = ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------- ASGI
def _asgi_route_name(scope: dict, method: str, routes_known: bool) -> str | None:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return f"{method} {path}"
    if routes_known:
        return f"{method} {NO_ROUTE}"
    return None


class MarkedASGIApp:
    """An ASGI application whose every http scope is one coroscope request."""

    coroscope_marks_requests = True

    def __init__(self, app):
        self.app = app
        # Starlette-like applications route into scope["route"]; anything else keeps its path
        self._routes_known = _routes_into_scope(app)

    def __getattr__(self, name):           # the server may look at the app's own attributes
        if name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or MARK in scope or not TRACE.on:
            return await self.app(scope, receive, send)
        method = scope.get("method", "GET")
        r = request(method)
        scope[MARK] = r
        with r:
            try:
                return await self.app(scope, receive, send)
            finally:
                name = _asgi_route_name(scope, method, self._routes_known)
                r.name = name or f"{method} {scope.get('path', '/').split('?', 1)[0]}"


def _routes_into_scope(app) -> bool:
    """Whether ``app``, or an application it wraps (middlewares are unwrapped through their
    ``app`` attribute), is a Starlette application or router: those put the matched route in
    ``scope["route"]``. FastAPI's application is a Starlette application."""
    starlette_types = tuple(t for t in (
        getattr(sys.modules.get("starlette.applications"), "Starlette", None),
        getattr(sys.modules.get("starlette.routing"), "Router", None)) if t is not None)
    if not starlette_types:
        return False
    for _ in range(16):
        if isinstance(app, starlette_types):
            return True
        inner = getattr(app, "app", None)
        if inner is None or inner is app:
            return False
        app = inner
    return False


def wrap_asgi(app):
    """``app`` marked, once: an application already wrapped is returned as it is."""
    if getattr(app, "coroscope_marks_requests", False):
        return app
    return MarkedASGIApp(app)


# ----------------------------------------------------------------------------------- patches
def _patch_uvicorn_config(module) -> None:
    Config = module.Config
    if getattr(Config.load, "coroscope", False):
        return
    original = Config.load

    def load(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if getattr(self, "loaded_app", None) is not None and self.interface != "wsgi":
            self.loaded_app = wrap_asgi(self.loaded_app)
    load.coroscope = True
    load.__wrapped__ = original
    Config.load = load


def _patch_hypercorn_utils(module) -> None:
    original = module.wrap_app
    if getattr(original, "coroscope", False):
        return

    def wrap_app(app, wsgi_max_body_size, mode):
        if mode is None:
            mode = "asgi" if module.is_asgi(app) else "wsgi"
        if mode == "asgi":
            app = wrap_asgi(app)
        return original(app, wsgi_max_body_size, mode)
    wrap_app.coroscope = True
    wrap_app.__wrapped__ = original
    module.wrap_app = wrap_app


def _aiohttp_route_name(req, method: str) -> str:
    match_info = getattr(req, "_match_info", None)
    route = getattr(match_info, "route", None)
    resource = getattr(route, "resource", None)
    canonical = getattr(resource, "canonical", None)
    if isinstance(canonical, str):
        return f"{method} {canonical}"
    return f"{method} {NO_ROUTE}"


def _patch_aiohttp_web_protocol(module) -> None:
    Handler = module.RequestHandler
    original = Handler._handle_request
    if getattr(original, "coroscope", False):
        return

    async def _handle_request(self, req, start_time, request_handler):
        if not TRACE.on or req.get(MARK) is not None:
            return await original(self, req, start_time, request_handler)
        method = req.method
        r = request(method)
        req[MARK] = r
        with r:
            try:
                return await original(self, req, start_time, request_handler)
            finally:
                r.name = _aiohttp_route_name(req, method)
    _handle_request.__name__ = original.__name__
    _handle_request.__qualname__ = original.__qualname__     # what task names show
    _handle_request.coroscope = True
    _handle_request.__wrapped__ = original
    Handler._handle_request = _handle_request


PATCHES = {
    "uvicorn.config": _patch_uvicorn_config,
    "hypercorn.utils": _patch_hypercorn_utils,
    "aiohttp.web_protocol": _patch_aiohttp_web_protocol,
}


# --------------------------------------------------------------------------- post-import hook
class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for the module names in ``patches`` it asks the finders after it
    and wraps the loader it gets, so the patch runs right after the module's code."""

    def __init__(self, patches: dict):
        self.patches = patches

    def find_spec(self, fullname, path=None, target=None):
        patch = self.patches.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader, patch):
        self.loader = loader
        self.patch = patch

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _apply(self.patch, module)

    def __getattr__(self, name):       # get_data, get_filename, is_package ... for importlib
        return getattr(self.loader, name)


def _apply(patch, module) -> None:
    try:
        patch(module)
    except Exception as exc:  # noqa: BLE001 - a server we do not know must still run
        print(f"coroscope: could not mark requests in {module.__name__}: {exc!r}", file=sys.stderr)


_finder: _PatchAfterImport | None = None


def install() -> None:
    """Patch the servers already imported; patch the others when they are imported."""
    global _finder
    if _finder is not None:
        return
    _finder = _PatchAfterImport(PATCHES)
    sys.meta_path.insert(0, _finder)
    for name, patch in PATCHES.items():
        module = sys.modules.get(name)
        if module is not None:
            _apply(patch, module)


def install_from_env() -> None:
    """Start-up hook: with COROSCOPE_TRACE on, and COROSCOPE_AUTO_REQUESTS not 0."""
    if os.environ.get("COROSCOPE_TRACE", "").strip().lower() not in _TRUE:
        return
    if os.environ.get("COROSCOPE_AUTO_REQUESTS", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    install()
