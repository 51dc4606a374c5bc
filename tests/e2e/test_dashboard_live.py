"""`coroscope top` against a real traced process (examples/dashboard_target.py).

The target is started the way coroscope starts targets (diag/bootstrap on PYTHONPATH,
COROSCOPE_* in its environment). Tests wait for the target's answers on stdout, never for
time, and refresh the dashboard with its own key (ctrl+r), then pilot.pause().
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from dashboards.app import DashboardApp
from diag import warnings
from diag.live.samplers import LiveSyscalls
from diag.live.source import attach

from ..capabilities import require

ROOT = Path(__file__).resolve().parents[2]
SIZE = (140, 45)


def start_target(loop: str = "runtime", *extra: str, fdtrack: bool = True,
                 env_extra: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, COROSCOPE_TRACE="1", COROSCOPE_LOOP=loop,
               PYTHONPATH=os.pathsep.join([str(ROOT / "diag" / "bootstrap"), str(ROOT)]),
               **(env_extra or {}))
    if fdtrack:
        env["COROSCOPE_FDTRACK"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "examples.dashboard_target", *extra],
                            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    expect(proc, "ready")
    return proc


def expect(proc: subprocess.Popen, answer: str) -> str:
    line = proc.stdout.readline().strip()
    while line.startswith("serving on"):
        line = proc.stdout.readline().strip()
    if not line.startswith(answer):
        proc.kill()
        raise AssertionError(f"target said {line!r} (wanted {answer!r}); stderr: {proc.stderr.read()[-2000:]}")
    return line


def command(proc: subprocess.Popen, text: str, answer: str) -> str:
    proc.stdin.write(text + "\n")
    proc.stdin.flush()
    return expect(proc, answer)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        stream.close()


@pytest.fixture
def target():
    proc = start_target()
    yield proc
    stop(proc)


def sync(test):
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return wrapper


def rows(app) -> list[list[str]]:
    table = app.query_one("#task-table", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def refresh(pilot) -> None:
    await pilot.press("ctrl+r")
    await pilot.pause()


@sync
async def test_planted_tasks_blocking_step_and_fd_leak_on_the_runtime(target):
    app = DashboardApp(attach(target.pid), auto_refresh=False)
    async with app.run_test(size=SIZE) as pilot:
        command(target, "tasks", "tasks")
        await refresh(pilot)
        names = {r[1] for r in rows(app)}
        # the names given to create_task(name=...), which reach the probe after the task's
        # create record (TASK_NAME); main keeps asyncio's default name, shown with its coroutine
        assert {"worker-1", "worker-2", "ticker", "parked"} <= names, names
        assert any(name.endswith(" main") for name in names), names
        assert not [f for f in app.findings if f.lint == "blocked-loop"]

        command(target, "block 300", "blocked")
        await refresh(pilot)
        (blocked,) = [f for f in app.findings if f.lint == "blocked-loop"]
        assert "planted_blocker" in blocked.message and "dashboard_target.py" in blocked.message
        assert any("planted_blocker" in frame for frame in blocked.evidence)
        await pilot.press("2")
        await pilot.pause()
        shown = str(app.query_one("#warnings-body", Static).render())
        assert "[blocked-loop]" in shown and "planted_blocker" in shown

        assert not [f for f in app.findings if f.lint == "fd-leak"]
        window = inspect.signature(warnings.fd_leak).parameters["window"].default
        for n in range(1, window + 1):           # one more socket at every refresh
            assert command(target, "leak 1", "leaked") == f"leaked {n}"
            await refresh(pilot)
            if n < window // 2:
                assert not [f for f in app.findings if f.lint == "fd-leak"]
        (leak,) = [f for f in app.findings if f.lint == "fd-leak"]
        assert leak.subject == "fd kind socket"
        assert any("planted_leaker" in line for line in leak.evidence), leak.evidence
        await pilot.press("4")
        await pilot.pause()
        assert "LEAK socket fds grew" in str(app.query_one("#fd-summary", Static).render())

        stop(target)                              # the target exits: the dashboard says so
        await refresh(pilot)
        assert not app.snapshot.target.alive
        assert "target exited" in str(app.query_one("#status", Static).render())
        assert len(rows(app)) >= 5                # and keeps what it had


def column(app, name: str) -> int:
    table = app.query_one("#task-table", DataTable)
    return [str(c.label) for c in table.ordered_columns].index(name)


async def wakes_sched_and_never_awaited(proc, app, pilot) -> None:
    """What the step records' wake kinds and the never-awaited record give, on any loop."""
    command(proc, "tasks", "tasks")
    await refresh(pilot)
    assert not [f for f in app.findings if f.lint in ("self-wakes", "never-awaited")]

    command(proc, "spin 20", "spun")
    await refresh(pilot)
    (spin,) = [f for f in app.findings if f.lint == "self-wakes"]
    assert "planted-spinner" in spin.subject and "woke itself in 20 of 20" in spin.message
    spinner = next(t for t in app.snapshot.tasks if t.coro == "planted_spinner")
    assert (spinner.polls, spinner.self_wakes, spinner.wakes) == (21, 20, 0)
    # the ticker is woken by its timer, 20 times a second: woken, never self-woken, and its
    # time in the ready queue shows in the Sched column
    ticker = next(t for t in app.snapshot.tasks if t.coro == "ticker")
    assert ticker.wakes >= 1 and ticker.self_wakes == 0 and ticker.scheduled_ns > 0
    (row,) = [r for r in rows(app) if r[0] == str(ticker.id)]
    assert row[column(app, "Sched")] not in ("-", "0"), row

    where = command(proc, "unawaited", "unawaited").split(" ", 1)[1]
    await refresh(pilot)
    (never,) = [f for f in app.findings if f.lint == "never-awaited"]
    assert never.subject == "coroutine planted_unawaited"
    assert never.evidence == [where] and "examples/dashboard_target.py:" in where
    assert f"created at {where}" in never.message
    assert not any(m.split(":")[0] in ("self-wakes", "scheduled delay", "never-awaited")
                   for m in app.snapshot.missing), app.snapshot.missing


@sync
async def test_self_wakes_scheduled_delay_and_never_awaited_on_the_runtime(target):
    app = DashboardApp(attach(target.pid), auto_refresh=False)
    async with app.run_test(size=SIZE) as pilot:
        await wakes_sched_and_never_awaited(target, app, pilot)


@sync
async def test_stock_asyncio_target_shows_what_it_can_and_says_what_is_missing():
    proc = start_target("asyncio")
    try:
        app = DashboardApp(attach(proc.pid), auto_refresh=False)
        async with app.run_test(size=SIZE) as pilot:
            command(proc, "leak 2", "leaked 2")
            await refresh(pilot)
            snap = app.snapshot
            assert snap.target.loop == "asyncio"
            assert any(m.startswith("scheduling lag: a stock asyncio loop") for m in snap.missing)
            assert snap.fds.by_kind.get("socket", 0) >= 2        # /proc works on any target
            names = {r[1] for r in rows(app)}                    # diag.instrument's task records
            assert {"worker-1", "worker-2"} <= names, names
            await pilot.press("6")
            await pilot.pause()
            shown = str(app.query_one("#loop-body", Static).render())
            assert "not available: scheduling lag: a stock asyncio loop" in shown
            assert "not available: slow callbacks" in shown
            await pilot.press("1")
            await wakes_sched_and_never_awaited(proc, app, pilot)
    finally:
        stop(proc)


@sync
async def test_hot_paths_from_the_in_process_sampler(tmp_path):
    template = str(tmp_path / "sampler-{pid}.txt")
    proc = start_target("runtime", "--serve", env_extra={"COROSCOPE_SAMPLER": template,
                                                         "COROSCOPE_SAMPLER_RATE": "200"})
    try:
        app = DashboardApp(attach(proc.pid), auto_refresh=False)
        async with app.run_test(size=SIZE) as pilot:
            await refresh(pilot)                   # the profile as it was when we attached
            path = tmp_path / f"sampler-{proc.pid}.txt"
            first = path.stat().st_mtime_ns if path.exists() else 0
            # the sampler rewrites its file every 0.5 s; on a loaded machine its thread may be
            # late, so the target works (each block is 0.2 s) until the file has moved on
            deadline = time.monotonic() + 30
            while not (path.exists() and path.stat().st_mtime_ns != first):
                assert time.monotonic() < deadline, "the sampler never rewrote its file"
                command(proc, "block 200", "blocked")
            await refresh(pilot)
            hot = app.snapshot.hot
            assert hot.samples > 0 and hot.source.startswith("in-process sampler")
            assert hot.folded and hot.top
            await pilot.press("5")
            await pilot.pause()
            shown = str(app.query_one("#hot-body", Static).render())
            assert "samples from in-process sampler" in shown and "function" in shown
    finally:
        stop(proc)


@sync
async def test_syscalls_per_request_with_ebpf():
    require("bcc")
    proc = start_target("runtime", "--serve", fdtrack=False)
    try:
        source = attach(proc.pid, syscalls=True)
        (counter,) = [s for s in source.samplers if isinstance(s, LiveSyscalls)]
        app = DashboardApp(source, auto_refresh=False)
        async with app.run_test(size=SIZE) as pilot:
            assert counter.counted.wait(60), counter.result[1]   # compiles, then counts
            await refresh(pilot)
            per_request = app.snapshot.requests.syscalls_per_request
            # the client's request is answered with one write: one sendto per request
            assert round(per_request["sendto"]) == 1, per_request
            await pilot.press("3")
            await pilot.pause()
            shown = str(app.query_one("#requests-body", Static).render())
            assert "sendto" in shown and "eBPF, over" in shown
    finally:
        stop(proc)
