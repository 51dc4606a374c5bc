"""coroscope bt across CPython versions: a version without a table, and 3.13's published offsets.

3.13 publishes ``_Py_DebugOffsets`` at the start of ``_PyRuntime``; ``coroscope bt`` checks them
against the layout it reads by.  Here they are read independently (from /proc/PID/mem of a live
process and from the PT_LOAD segments of a gcore core) and compared with the 3.13 table, and a
copy of the core with one published offset changed must stop ``coroscope bt`` with one line.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.capabilities import require, run
from tests.e2e.test_gdb_backtrace import COROSCOPE, ROOT, TASK_COUNT, Target, core_offset, python_exe

sys.path.insert(0, str(ROOT / "gdb"))
import coroscope_debug_offsets as debug_offsets  # noqa: E402
import coroscope_layouts as layouts  # noqa: E402

sys.path.remove(str(ROOT / "gdb"))

pytestmark = pytest.mark.needs_gdb

needs_313 = pytest.mark.skipif(sys.version_info[:2] != (3, 13),
                               reason="_Py_DebugOffsets are published from CPython 3.13 (checked with the 3.13 table)")


def older_python() -> str | None:
    """A CPython older than 3.11 (no layout table), from pyenv or PATH."""
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")))
    return found[-1] if found else shutil.which("python3.10")


def test_a_version_without_a_table_gives_one_line():
    require("gdb", "ptrace")
    exe = older_python()
    if exe is None:
        pytest.skip("no CPython 3.10 on this machine (pyenv or PATH)")
    proc = subprocess.Popen([exe, "-c", "import time; print('ready', flush=True); time.sleep(120)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        r = run(COROSCOPE + ["bt", str(proc.pid)], cwd=ROOT)
    finally:
        proc.kill()
        proc.wait()
    assert r.returncode == 2
    assert r.stderr.strip() == (f"coroscope: error: pid {proc.pid}: CPython 3.10 is not supported "
                                f"(supported: {layouts.supported_text()})")
    assert r.stdout == ""


@pytest.fixture(scope="module")
def target313():
    require("gdb", "ptrace")
    t = Target("asyncio")
    yield t
    t.close()


@pytest.fixture(scope="module")
def live313(target313):
    from diag.backtrace.gdbrun import collect_document
    return collect_document(pid=target313.pid)


@pytest.fixture(scope="module")
def core313(target313, tmp_path_factory):
    require("gcore")
    prefix = tmp_path_factory.mktemp("core") / "core"
    r = run(["gcore", "-o", str(prefix), str(target313.pid)], timeout=120)
    path = Path(f"{prefix}.{target313.pid}")
    assert path.exists(), r.stderr
    return path


TABLE = layouts.table_for((3, 13))


def published_from(read, runtime: int) -> dict:
    return debug_offsets.parse(read(runtime, debug_offsets.size(TABLE)), TABLE)


@needs_313
def test_published_offsets_of_a_live_process_match_the_table(target313, live313):
    assert live313["debug_offsets_agreeing"] == len(TABLE.DEBUG_OFFSETS_CHECKS)
    runtime = int(live313["runtime"], 16)

    def read(address, size):
        with open(f"/proc/{target313.pid}/mem", "rb") as mem:
            mem.seek(address)
            return mem.read(size)

    published = published_from(read, runtime)
    assert published["version"] >> 16 == 0x030D and published["free_threaded"] == 0
    assert debug_offsets.compare(published, TABLE, TABLE.OFFSETS) == []
    assert len(live313["tasks"]) == TASK_COUNT


@needs_313
def test_published_offsets_in_a_core_match_the_table(live313, core313):
    from diag.backtrace.gdbrun import collect_document
    doc = collect_document(core=str(core313), exe=python_exe())
    assert doc["debug_offsets_agreeing"] == len(TABLE.DEBUG_OFFSETS_CHECKS)
    runtime = int(doc["runtime"], 16)

    def read(address, size):
        with open(core313, "rb") as f:
            f.seek(core_offset(core313, address))
            return f.read(size)

    published = published_from(read, runtime)
    assert debug_offsets.compare(published, TABLE, TABLE.OFFSETS) == []
    assert published["thread_state.current_frame"] == TABLE.OFFSETS["PyThreadState.current_frame"]


@needs_313
def test_a_core_whose_published_offsets_disagree_gives_one_line(live313, core313, tmp_path):
    runtime = int(live313["runtime"], 16)
    corrupt = tmp_path / "disagreeing.core"
    shutil.copy(core313, corrupt)
    index = TABLE.DEBUG_OFFSETS_FIELDS.index("thread_state.current_frame")
    ours = TABLE.OFFSETS["PyThreadState.current_frame"]
    with open(corrupt, "r+b") as f:
        f.seek(core_offset(corrupt, runtime + len(debug_offsets.COOKIE) + 8 * index))
        f.write((ours + 8).to_bytes(8, "little"))
    r = run(COROSCOPE + ["bt", "--core", str(corrupt), "--exe", python_exe()], cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"coroscope: error: core {corrupt}: CPython 3.13: the interpreter's _Py_DebugOffsets disagree "
        f"with the layout: PyThreadState.current_frame: ours {ours}, published {ours + 8} "
        f"(thread_state.current_frame)")
    assert r.stdout == ""


EAGER_TARGET = r'''
import asyncio, json, os, threading, time

async def suspended(event):
    await event.wait()                                     # eager:suspended

async def finished():
    return 1

async def blocker():
    print(json.dumps({"pid": os.getpid(), "tid": threading.get_native_id()}), flush=True)
    time.sleep(3600)                                       # eager:blocker

async def main():
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)
    event = asyncio.Event()
    keep = [asyncio.create_task(suspended(event), name=f"eager-{i}") for i in range(3)]
    done = asyncio.create_task(finished(), name="eager-finished")
    assert done.done()                                     # finished inside create_task
    asyncio.create_task(blocker(), name="eager-blocker")   # its first step never ends

asyncio.run(main())
'''


def eager_line(tag: str) -> int:
    return next(i for i, text in enumerate(EAGER_TARGET.splitlines(), 1) if f"# eager:{tag}" in text)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks exist from CPython 3.12")
def test_eager_tasks_are_found(tmp_path):
    """Suspended eager tasks (in _scheduled_tasks once they suspend), one in its eager first
    step (only in _eager_tasks), and none for a task that finished inside create_task."""
    require("gdb", "ptrace")
    script = tmp_path / "eager_target.py"
    script.write_text(EAGER_TARGET)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        info = __import__("json").loads(proc.stdout.readline())
        from diag.backtrace.gdbrun import collect_document
        doc = collect_document(pid=info["pid"])
    finally:
        proc.kill()
        proc.wait()
    # create_task names a task after the factory returns, so the blocker, still in its first
    # step, has the default name (3.12+ keeps only the counter: main is 1, then 2-6).
    names = sorted(t["name"] for t in doc["tasks"])
    assert names == ["Task-1", "Task-6", "eager-0", "eager-1", "eager-2"]
    tasks = {t["name"]: t for t in doc["tasks"]}
    tasks["eager-blocker"] = tasks.pop("Task-6")
    for i in range(3):
        t = tasks[f"eager-{i}"]
        assert t["state"] == "pending" and t["awaiting"]["kind"] == "event"
        assert (Path(t["frames"][0]["file"]).name, t["frames"][0]["line"]) == (script.name, eager_line("suspended"))
    blocked = tasks["eager-blocker"]
    assert blocked["state"] == "running"
    assert blocked["awaiting"] == {"kind": "running", "thread": info["tid"]}
    assert [(f["function"], f["line"]) for f in blocked["frames"]] == [("blocker", eager_line("blocker"))]


@needs_313
def test_a_core_without_the_cookie_gives_one_line(live313, core313, tmp_path):
    runtime = int(live313["runtime"], 16)
    corrupt = tmp_path / "no-cookie.core"
    shutil.copy(core313, corrupt)
    with open(corrupt, "r+b") as f:
        f.seek(core_offset(corrupt, runtime))
        f.write(b"notdebug")
    r = run(COROSCOPE + ["bt", "--core", str(corrupt), "--exe", python_exe()], cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"coroscope: error: core {corrupt}: _PyRuntime does not open with the "
                                f"xdebugpy cookie of _Py_DebugOffsets")
