"""`coroscope top`'s awaiting column and await chains, read from a real traced process's memory.

The target is stock asyncio started the way coroscope starts targets (COROSCOPE_TRACE=1 with
diag/bootstrap on PYTHONPATH: diag.instrument wraps every task's coroutine in its step timer),
with tasks waiting in known places: three in asyncio.sleep, three on one Event two calls deep.
Tests wait on the target's stdout and on the sampler's own count of reads, never on time.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from dashboards.app import DashboardApp
from diag.live.awaits import AwaitSampler
from diag.live.source import attach

from ..capabilities import require

ROOT = Path(__file__).resolve().parents[2]
SIZE = (200, 45)

TARGET = '''
import asyncio, json, os, sys

async def sleeper():
    await asyncio.sleep(3600)  # at:sleep

async def waiter(event):
    await event.wait()  # at:wait

async def outer(event):
    await waiter(event)  # at:outer

async def main():
    event = asyncio.Event()
    tasks = [asyncio.create_task(sleeper(), name=f"sleeper-{i}") for i in range(3)]
    tasks += [asyncio.create_task(outer(event), name=f"waiter-{i}") for i in range(3)]
    await asyncio.sleep(0.01)
    print(json.dumps({"pid": os.getpid()}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

asyncio.run(main())
'''


def line_of(tag: str) -> int:
    return next(i for i, line in enumerate(TARGET.splitlines(), start=1) if f"# at:{tag}" in line)


@pytest.fixture
def target(tmp_path):
    require("ptrace")
    script = tmp_path / "known_places.py"
    script.write_text(TARGET)
    env = dict(os.environ, COROSCOPE_TRACE="1", COROSCOPE_LOOP="asyncio",
               PYTHONPATH=os.pathsep.join([str(ROOT / "diag" / "bootstrap"), str(ROOT)]))
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    proc.pid_seen = json.loads(proc.stdout.readline())["pid"]
    proc.script = str(script)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()


def sampler_of(source) -> AwaitSampler:
    return next(s for s in source.samplers if isinstance(s, AwaitSampler))


def test_bt_sees_through_the_step_timer_with_either_reader(target):
    """Both readers walk past diag.instrument's wrapper to the task's own coroutine."""
    require("gdb")
    pid = str(target.pid_seen)
    docs = {}
    for how, extra in (("memory", []), ("gdb", ["--gdb"])):
        r = subprocess.run([sys.executable, "-m", "diag.cli", "bt", pid, "--json", *extra],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        docs[how] = {t["name"]: t for t in json.loads(r.stdout)}
    for how, tasks in docs.items():
        assert [f["function"] for f in tasks["sleeper-0"]["frames"]] == ["sleeper", "sleep"], how
        assert tasks["sleeper-0"]["awaiting"]["kind"] == "sleep", how
        assert [f["function"] for f in tasks["waiter-1"]["frames"]] == ["outer", "waiter", "Event.wait"]
        assert tasks["waiter-1"]["awaiting"]["kind"] == "event" and tasks["waiter-1"]["awaiting"]["waiters"] == 3
    strip = lambda t: [(f["function"], f["line"]) for f in t["frames"]]  # noqa: E731
    assert {n: strip(t) for n, t in docs["memory"].items()} == {n: strip(t) for n, t in docs["gdb"].items()}


def test_top_fills_the_awaiting_column_and_the_chain(target):
    source = attach(target.pid_seen)
    sampler = sampler_of(source)
    app = DashboardApp(source, auto_refresh=False)

    async def main():
        async with app.run_test(size=SIZE) as pilot:
            # the read runs on the sampler's thread: wait for it there, not on the UI's loop
            assert await asyncio.get_running_loop().run_in_executor(None, sampler.wait_for_reads, 1, 120)
            await pilot.press("ctrl+r")
            await pilot.pause()
            table = app.query_one("#task-table", DataTable)
            by_name = {}
            for i in range(table.row_count):
                row = [str(c) for c in table.get_row_at(i)]
                by_name[row[1]] = row
            for i in range(3):
                assert by_name[f"sleeper-{i}"][-1].startswith("sleep until loop time"), by_name
                assert by_name[f"waiter-{i}"][-1].startswith("asyncio.locks.Event 0x"), by_name
                assert "(3 waiters" in by_name[f"waiter-{i}"][-1]
            row = next(i for i in range(table.row_count) if str(table.get_row_at(i)[1]) == "waiter-2")
            table.move_cursor(row=row)
            await pilot.pause()
            detail = str(app.query_one("#task-detail", Static).render())
            name = os.path.basename(target.script)
            assert f"{name}:{line_of('outer')} outer" in detail, detail
            assert f"{name}:{line_of('wait')} waiter" in detail, detail
            assert "Event.wait" in detail and "read from memory" in detail, detail
            assert "-> asyncio.locks.Event 0x" in detail and "is_set=False" in detail, detail
            assert not [m for m in app.snapshot.missing if m.startswith("await chains")]

    try:
        asyncio.run(main())
    finally:
        source.close()
    assert sampler.reads >= 1 and sampler.latest.torn == 0 and not sampler.latest.error


def test_a_failed_read_shows_as_such(target):
    source = attach(target.pid_seen)
    sampler = sampler_of(source)
    try:
        assert sampler.wait_for_reads(1, 120)
        assert {t.name: t.awaiting for t in source.poll().tasks}["sleeper-0"].startswith("sleep")
        target.kill()
        target.wait()
        done = sampler.reads
        assert sampler.wait_for_reads(done + 1, 120)
        snap = source.poll()
    finally:
        source.close()
    assert sampler.latest.error, sampler.latest
    assert {t.name: t.awaiting for t in snap.tasks}["sleeper-0"] == "? (read failed)"
    notes = [m for m in snap.missing if m.startswith("await chains: read failed")]
    assert len(notes) == 1 and len(notes[0].splitlines()) == 1, snap.missing
