"""Real services with no code change: uvicorn, hypercorn, aiohttp and gunicorn, traced by the
environment alone (COROSCOPE_TRACE=1), their requests marked with route names, watched by
`coroscope top` and counted by `coroscope syscalls --pid`.

Every handler of the apps (tests/e2e/userapps) makes exactly one getppid per request, a syscall
none of the servers makes, so a count of 1.00 per request shows that each request was charged
its own syscalls and nothing else's.
"""
from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import time

import pytest
from textual.widgets import Static

from dashboards.app import DashboardApp
from diag import workers
from diag.live.source import WorkersSource, attach_service

from ..capabilities import require
from .web_services import Service, ended_request_names

SERVERS = ["uvicorn", "hypercorn", "aiohttp", "gunicorn"]
PRE_FORK = ("gunicorn", "gunicorn-aiohttp")
ITEMS, MISSES = 20, 3
SIZE = (140, 45)


@pytest.fixture
def service(request):
    svc = Service(*request.param) if isinstance(request.param, tuple) else Service(request.param)
    try:
        svc.wait_listening()
        yield svc
    finally:
        svc.stop()


def serving(svc: Service, count: int | None = None, timeout: float = 30.0) -> list[int]:
    """The pids that serve (a pre-fork master's workers), waiting for ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        pids = workers.find(svc.pid).pids
        if count is None or len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


@pytest.mark.parametrize("service", [*SERVERS, "gunicorn-aiohttp"], indirect=True)
def test_requests_are_marked_with_route_names_and_no_code_change(service):
    statuses = service.get([f"/items/{i}" for i in range(ITEMS)] + [f"/missing/{i}" for i in range(MISSES)])
    assert statuses == [200] * ITEMS + [404] * MISSES
    pids = serving(service, 2 if service.server in PRE_FORK else 1)
    if service.server in (*PRE_FORK, "hypercorn"):
        assert service.pid not in pids, "the master serves nothing; its workers do"
    names = ended_request_names(pids, ITEMS + MISSES)
    # one name per route, never one per id; a path no route matched is one name too
    assert names == {"GET /items/{n}": ITEMS, "GET (no route)": MISSES}, names


@pytest.mark.parametrize("service", [("uvicorn", "fastapi_marked")], indirect=True)
def test_explicit_middleware_and_the_hook_mark_a_request_once(service):
    assert service.get([f"/items/{i}" for i in range(ITEMS)]) == [200] * ITEMS
    names = ended_request_names(serving(service), ITEMS)
    assert sum(names.values()) == ITEMS, names
    assert names["GET /items/{n}"] == ITEMS, names


@pytest.mark.parametrize("service", ["uvicorn"], indirect=True)
def test_a_streaming_response_is_one_request_for_its_whole_body(service):
    from diag import probe
    assert service.get(["/stream/5", "/stream/3"]) == [200, 200]
    names = ended_request_names(serving(service), 2)
    assert names == {"GET /stream/{n}": 2}, names
    with probe.attach(serving(service)[0]) as reader:
        header_loop = reader.header.loop_kind
    # uvicorn picks uvloop when it is installed: the header names the loop that runs
    assert header_loop == "uvloop"


@pytest.mark.parametrize("service, loop", [
    # asked for the runtime, but uvicorn makes asyncio's loop itself (asyncio.Runner(loop_factory=
    # SelectorEventLoop)): that loop runs, so the header says so, and its tasks are traced
    (("uvicorn", "fastapi_items", {"COROSCOPE_LOOP": "runtime"}, ("--loop", "asyncio")), "asyncio"),
    # uvicorn's custom loop factory puts it on the runtime
    (("uvicorn", "fastapi_items", {}, ("--loop", "runtime:new_event_loop")), "runtime"),
], indirect=["service"], ids=["asked-runtime-runs-asyncio", "loop-runtime-factory"])
def test_the_header_names_the_loop_uvicorn_runs_not_the_one_asked_for(service, loop):
    from diag import probe
    assert service.get([f"/items/{i}" for i in range(ITEMS)]) == [200] * ITEMS
    names = ended_request_names([service.pid], ITEMS)
    assert names == {"GET /items/{n}": ITEMS}, names
    with probe.attach(service.pid) as reader:
        assert reader.header.loop_kind == loop
        counters = reader.counters()
    # the loop that runs is traced, not only the requests marked: every request ran in a task
    assert counters["tasks_created"] >= ITEMS and counters["loop_iterations"] > 0, counters


def sync(test):
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return wrapper


def requests_text(app) -> str:
    return str(app.query_one("#requests-body", Static).render())


def ended_shown(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.strip().startswith(name):
            return int(line.split()[len(name.split())].replace(",", ""))
    return 0


# the loop each server runs by default here (uvicorn picks uvloop when it is installed)
LOOPS = {"uvicorn": "uvloop", "hypercorn": "asyncio", "aiohttp": "asyncio", "gunicorn": "uvloop"}


@pytest.mark.parametrize("service", SERVERS, indirect=True)
@sync
async def test_top_shows_requests_by_route_name(service):
    await asyncio.to_thread(service.get, ["/items/1"])     # a worker is up and its loop named
    pids = serving(service, 2 if service.server in PRE_FORK else 1)
    source = attach_service(service.pid)
    watched = source.current.pid if isinstance(source, WorkersSource) else source.pid
    assert watched in pids                  # a master's pid given: one of its workers watched
    app = DashboardApp(source, auto_refresh=False)
    shown = {}
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.to_thread(service.get, [f"/items/{i}" for i in range(ITEMS)] + ["/missing/1"])
        await asyncio.to_thread(ended_request_names, pids, ITEMS + 2)
        await pilot.press("3")                  # the Requests view
        for _ in pids:
            await pilot.press("ctrl+r")
            await pilot.pause()
            text = requests_text(app)
            assert "/items/7" not in text       # names carry no ids
            pid = source.current.pid if isinstance(source, WorkersSource) else source.pid
            shown[pid] = (ended_shown(text, "GET /items/{n}"), ended_shown(text, "GET (no route)"))
            status = str(app.query_one("#status", Static).render())
            assert f"loop: {LOOPS[service.server]}" in status, status
            await pilot.press("w")              # the next worker, where there are several
            await pilot.pause()
    # every worker was shown, and between them they served every request; the dashboard reads
    # each ring from its oldest record, so the first request is in it too
    assert set(shown) == set(pids), shown
    assert sum(i for i, _ in shown.values()) == ITEMS + 1, shown
    assert sum(m for _, m in shown.values()) == 1, shown


def _syscalls_under_wrk(target_pid: int, port: int, tmp_path, extra=()) -> dict:
    out = tmp_path / "syscalls.json"
    cmd = [sys.executable, "-m", "diag.cli", "syscalls", "--pid", str(target_pid), "--duration", "4",
           "--json", str(out), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "counting syscalls" not in line:        # the counter is attached from here on
            line = proc.stderr.readline()
            if not line:
                raise AssertionError(f"syscalls said nothing: {proc.stdout.read()}")
        subprocess.run(["wrk", "-t1", "-c8", "-d2s", f"http://127.0.0.1:{port}/items/7"],
                       capture_output=True, timeout=60, check=True)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    report = json.loads(out.read_text())
    report["_stdout"] = stdout
    return report


@pytest.mark.parametrize("service", SERVERS, indirect=True)
def test_syscalls_per_request_by_route_under_wrk(service, tmp_path):
    require("bcc", "wrk")
    service.get(["/items/1"])
    serving(service, 2 if service.server in PRE_FORK else 1)
    report = _syscalls_under_wrk(service.pid, service.port, tmp_path)
    if service.server in PRE_FORK and not report["by_route"]:
        # `--pid MASTER` measures one worker, and the kernel may hand all eight of wrk's
        # connections to the other one (whichever is woken first accepts them all): then
        # that one is asked for, as a user told so by the note would.
        other = next(p for p in workers.find(service.pid).pids if p != report["pid"])
        report = _syscalls_under_wrk(service.pid, service.port, tmp_path,
                                     extra=("--worker", str(other)))
    (route,) = [r for r in report["by_route"] if r["name"] == "GET /items/{n}"]
    assert route["requests"] > 100
    assert route["by_name"]["getppid"] == 1.0, route
    assert "GET /items/{n}" in report["_stdout"]
    if service.server in ("gunicorn", "hypercorn"):     # the master's pid was given
        assert report["pid"] in workers.find(service.pid).pids and report["pid"] != service.pid


@pytest.mark.parametrize("service", ["gunicorn"], indirect=True)
@sync
async def test_top_follows_a_worker_the_master_replaces(service):
    import os
    import signal
    before = serving(service, 2)
    source = attach_service(service.pid)
    assert isinstance(source, WorkersSource)
    app = DashboardApp(source, auto_refresh=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await pilot.pause()
        victim = source.current.pid
        os.kill(victim, signal.SIGKILL)           # as the OOM killer would
        survivor = next(p for p in before if p != victim)

        def replaced():
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = workers.find(service.pid).pids
                if victim not in now and len(now) == 2:
                    return now
                time.sleep(0.1)
            raise AssertionError("gunicorn started no worker in place of the one killed")
        after = await asyncio.to_thread(replaced)
        (newcomer,) = set(after) - {survivor}
        for _ in range(WorkersSource.REDISCOVER_POLLS):
            await pilot.press("ctrl+r")
            await pilot.pause()
        assert victim not in source.pids and newcomer in source.pids, source.pids
        assert source.current.pid in after       # it moved off the dead worker by itself
        status = str(app.query_one("#status", Static).render())
        assert f"pid {source.current.pid}, worker" in status, status


@pytest.mark.parametrize("service", ["uvicorn"], indirect=True)
def test_requests_in_flight_from_outside_bt_and_await_flame(service, tmp_path):
    """Three requests waiting in the handler, read from outside with no code change: `bt` names
    each one's request, `flame --mode await --by request` gives one root per request with the
    handler's await in it."""
    import threading
    require("ptrace")
    from diag.flame import formats
    results = []
    clients = [threading.Thread(target=lambda: results.append(service.get(["/wait/4"])))
               for _ in range(3)]
    for c in clients:
        c.start()
    (pid,) = serving(service)
    deadline = time.monotonic() + 10
    while True:                              # until the three have reached the handler
        bt = subprocess.run([sys.executable, "-m", "diag.cli", "bt", str(pid), "--json"],
                            capture_output=True, text=True, timeout=60)
        assert bt.returncode == 0, bt.stderr
        waiting = [t for t in json.loads(bt.stdout)
                   if any(f["function"] == "wait" for f in t["frames"])]
        if len(waiting) == 3 or time.monotonic() > deadline:
            break
    out = tmp_path / "by-request.collapsed.txt"
    r = subprocess.run([sys.executable, "-m", "diag.cli", "flame", "--pid", str(pid), "--mode",
                        "await", "--by", "request", "--duration", "1", "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    for c in clients:
        c.join()
    assert results == [[200]] * 3
    assert len(waiting) == 3 and len({t["request"] for t in waiting}) == 3, waiting
    assert all(t["request"] for t in waiting)
    assert r.returncode == 0, r.stderr
    stacks = formats.parse_collapsed(out.read_text())
    roots = {k[0] for k in stacks if any(f.startswith("wait (") for f in k)}
    assert roots == {f"[request: {t['request']}]" for t in waiting}, roots
