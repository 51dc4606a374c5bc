"""coroscope bt / the gdb ``coro`` commands against real processes and a real core file.

One target process per loop kind (stock asyncio, coroscope's runtime loop) and one gcore core
are shared by the whole module: starting them is most of the cost.  The target
(examples/suspended_tasks.py) holds tasks suspended in every kind of wait; expected lines come
from its ``# bt:<tag>`` comments and from the installed asyncio sources, never typed in here.
"""
from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import asyncio
import pytest

from tests.capabilities import require, run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "suspended_tasks.py"
COROSCOPE = [sys.executable, "-m", "diag.cli"]
TASK_COUNT = 25  # tasks examples/suspended_tasks.py creates with --extra 0 (see its docstring)

pytestmark = pytest.mark.needs_gdb


def markers() -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for number, text in enumerate(EXAMPLE.read_text().splitlines(), 1):
        m = re.search(r"# bt:(\w+)", text)
        if m:
            out.setdefault(m.group(1), []).append(number)
    return out


MARK = markers()


def line_of(func, needle: str) -> int:
    lines, first = inspect.getsourcelines(func)
    for i, text in enumerate(lines):
        if needle in text:
            return first + i
    raise AssertionError(f"{needle!r} not in {func}")


class Target:
    def __init__(self, loop: str, extra: int = 0):
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--loop", loop, "--extra", str(extra)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise RuntimeError(f"target did not start: {self.proc.stderr.read()[-2000:]}")
        self.info = json.loads(line)
        self.pid = self.info["pid"]

    def echo(self, payload: bytes = b"ping\n") -> bytes:
        with socket.create_connection(("127.0.0.1", self.info["port"]), timeout=10) as s:
            s.sendall(payload)
            return s.makefile("rb").readline()

    def close(self):
        self.proc.kill()
        self.proc.wait(10)


def start_target(loop: str) -> Target:
    if loop == "runtime":
        try:
            import runtime
            runtime.new_event_loop().close()
        except Exception as exc:  # the runtime loop is a colleague's work in progress
            pytest.skip(f"runtime.new_event_loop() is not usable: {exc}")
    return Target(loop)


@pytest.fixture(scope="module", params=["asyncio", "runtime"])
def target(request):
    require("gdb", "ptrace")
    t = start_target(request.param)
    t.loop_kind = request.param
    yield t
    t.close()


@pytest.fixture(scope="module")
def live_doc(target):
    from diag.backtrace.gdbrun import collect_document
    return collect_document(pid=target.pid)


@pytest.fixture(scope="module")
def stock_target():
    require("gdb", "ptrace")
    t = start_target("asyncio")
    yield t
    t.close()


@pytest.fixture(scope="module")
def core_file(stock_target, tmp_path_factory):
    require("gcore")
    prefix = tmp_path_factory.mktemp("core") / "core"
    r = run(["gcore", "-o", str(prefix), str(stock_target.pid)], timeout=120)
    path = Path(f"{prefix}.{stock_target.pid}")
    assert path.exists(), r.stderr
    return path


@pytest.fixture(scope="module")
def core_doc(core_file):
    from diag.backtrace.gdbrun import collect_document
    return collect_document(core=str(core_file), exe=python_exe())


def python_exe() -> str:
    return os.path.realpath(sys.executable)


def by_name(doc) -> dict:
    return {t["name"]: t for t in doc["tasks"]}


def sig(frame) -> tuple:
    return (Path(frame["file"]).name, frame["line"], frame["function"])


def check_every_wait(doc: dict, info: dict, live: bool) -> None:
    """The shared assertions: each task's chain, outermost first, and its leaf."""
    ex = EXAMPLE.name
    tasks = by_name(doc)
    assert len(doc["tasks"]) == TASK_COUNT, sorted(tasks)

    sleeper = tasks["sleeper"]
    assert [sig(f) for f in sleeper["frames"][:2]] == [(ex, MARK["sleeper"][0], "sleeper"), (ex, MARK["nap"][0], "nap")]
    assert sig(sleeper["frames"][2]) == ("tasks.py", line_of(asyncio.sleep, "return await future"), "sleep")
    assert sleeper["awaiting"]["kind"] == "sleep" and isinstance(sleeper["awaiting"]["deadline"], float)
    if live:
        assert sleeper["awaiting"]["remaining_s"] > 3600 * 23

    reader = tasks["sock-reader"]
    assert sig(reader["frames"][0]) == (ex, MARK["sock_recv"][0], "sock_reader")
    assert reader["awaiting"]["kind"] == "fd"
    assert (reader["awaiting"]["fd"], reader["awaiting"]["mode"]) == (info["sock_fd"], "read")

    lock = tasks["lock-waiter"]
    assert [f["function"] for f in lock["frames"]] == ["lock_waiter", "_ContextManagerMixin.__aenter__", "Lock.acquire"]
    assert lock["frames"][0]["line"] == MARK["lock_waiter"][0]
    assert lock["frames"][-1]["line"] == line_of(asyncio.Lock.acquire, "await fut")
    assert {k: lock["awaiting"][k] for k in ("kind", "locked", "waiters")} == {"kind": "lock", "locked": True, "waiters": 1}

    event = tasks["event-waiter"]
    assert [sig(f) for f in event["frames"]] == [(ex, MARK["event"][0], "event_waiter"),
                                                ("locks.py", line_of(asyncio.Event.wait, "await fut"), "Event.wait")]
    # Six waiters: this task, two gather children, two TaskGroup children, the async generator.
    assert {k: event["awaiting"][k] for k in ("kind", "is_set", "waiters")} == {"kind": "event", "is_set": False, "waiters": 6}

    agen = tasks["agen-consumer"]
    assert [sig(f) + (f["kind"],) for f in agen["frames"]] == [
        (ex, MARK["agen_consumer"][0], "agen_consumer", "coroutine"),
        (ex, MARK["agen"][0], "ticker", "async_generator"),
        ("locks.py", line_of(asyncio.Event.wait, "await fut"), "Event.wait", "coroutine")]
    assert agen["awaiting"]["kind"] == "event"

    legacy = tasks["generator-waiter"]
    assert [sig(f) + (f["kind"],) for f in legacy["frames"]] == [
        (ex, MARK["generator_waiter"][0], "generator_waiter", "coroutine"),
        (ex, MARK["generator"][0], "legacy_wait", "generator")]
    assert legacy["awaiting"]["kind"] == "future"
    assert legacy["awaiting"]["held_by"] == [tasks["main"]["id"]]  # main() keeps it in a local

    queue = tasks["queue-getter"]
    assert [sig(f) for f in queue["frames"]] == [(ex, MARK["queue"][0], "queue_getter"),
                                                ("queues.py", line_of(asyncio.Queue.get, "await getter"), "Queue.get")]
    assert {k: queue["awaiting"][k] for k in ("kind", "qsize", "waiters")} == {"kind": "queue", "qsize": 0, "waiters": 1}

    sem = tasks["semaphore-waiter"]
    assert [f["function"] for f in sem["frames"]] == ["semaphore_waiter", "_ContextManagerMixin.__aenter__", "Semaphore.acquire"]
    assert sem["frames"][0]["line"] == MARK["semaphore"][0]
    assert {k: sem["awaiting"][k] for k in ("kind", "value", "waiters")} == {"kind": "semaphore", "value": 0, "waiters": 1}

    cond = tasks["condition-waiter"]
    assert [sig(f) for f in cond["frames"]] == [(ex, MARK["condition"][0], "condition_waiter"),
                                               ("locks.py", line_of(asyncio.Condition.wait, "await fut"), "Condition.wait")]
    assert {k: cond["awaiting"][k] for k in ("kind", "waiters")} == {"kind": "condition", "waiters": 1}

    gather = tasks["gather-parent"]
    assert [sig(f) for f in gather["frames"]] == [(ex, MARK["gather"][0], "gather_parent")]
    assert gather["awaiting"]["kind"] == "gather"
    children = [c["id"] for c in gather["awaiting"]["children"]]
    by_id = {t["id"]: t for t in doc["tasks"]}
    assert len(children) == 2
    for child in children:
        assert sig(by_id[child]["frames"][0]) == (ex, MARK["child"][0], "child")
        assert by_id[child]["awaiting"]["kind"] == "event"

    tg = tasks["tg-parent"]
    assert sig(tg["frames"][0]) == (ex, MARK["taskgroup"][0], "tg_parent")
    assert tg["frames"][1]["function"] == "TaskGroup.__aexit__"
    assert tg["awaiting"]["kind"] == "taskgroup"
    assert sorted(c["name"] for c in tg["awaiting"]["children"]) == ["tg-child-1", "tg-child-2"]

    thread = tasks["thread-waiter"]
    assert [sig(f) for f in thread["frames"]] == [(ex, MARK["thread"][0], "thread_waiter")]
    assert thread["awaiting"]["kind"] == "thread"
    assert thread["awaiting"]["thread"] == info["executor_tid"]
    assert "blocking_wait" in thread["awaiting"]["function"]

    a, b = tasks["cycle-a"], tasks["cycle-b"]
    assert sig(a["frames"][0]) == (ex, MARK["cycle"][0], "cycle_member")
    assert (a["awaiting"]["kind"], a["awaiting"]["task"]) == ("task", b["id"])
    assert (b["awaiting"]["kind"], b["awaiting"]["task"]) == ("task", a["id"])
    assert doc["cycles"] == [[min(a["id"], b["id"]), max(a["id"], b["id"]), min(a["id"], b["id"])]]

    waiter = tasks["future-waiter"]
    assert sig(waiter["frames"][0]) == (ex, MARK["future"][0], "future_waiter")
    assert waiter["awaiting"]["kind"] == "future"
    assert waiter["awaiting"]["held_by"] == [tasks["future-owner"]["id"]]

    running = [t for t in doc["tasks"] if t["state"] == "running"]
    assert len(running) == 1
    assert [sig(f) + (f["kind"],) for f in running[0]["frames"]] == [
        (ex, MARK["running_outer"][0], "running_thread.<locals>.running", "running"),
        (ex, MARK["running"][0], "busy", "running")]
    assert running[0]["awaiting"] == {"kind": "running", "thread": info["running_tid"]}
    assert running[0]["loop"]["thread"] == info["running_tid"]

    handler = [t for t in doc["tasks"] if t["frames"] and t["frames"][0]["function"] == "echo"]
    assert len(handler) == 1
    assert sig(handler[0]["frames"][0]) == (ex, MARK["stream"][0], "echo")
    assert handler[0]["awaiting"]["kind"] == "fd" and handler[0]["awaiting"]["via"] == "StreamReader"

    main = tasks["main"]
    assert sig(main["frames"][0]) == (ex, MARK["main"][0], "main")
    assert main["frames"][1]["function"] == "Server.serve_forever"

    cancelling = tasks["cancelling"]
    assert cancelling["state"] == "cancelling"
    assert sig(cancelling["frames"][0]) == (ex, MARK["cancelling"][0], "stubborn")
    assert cancelling["awaiting"]["kind"] == "sleep"

    suspended = [t for t in doc["tasks"] if t["state"] not in ("running", "cancelling")]
    assert all(t["state"] == "pending" and "error" not in t for t in suspended)


def test_every_wait_live(target, live_doc):
    check_every_wait(live_doc, target.info, live=True)
    loop_classes = {t["loop"]["class"] for t in live_doc["tasks"]}
    expected = "runtime.loop.Loop" if target.loop_kind == "runtime" else "asyncio.unix_events._UnixSelectorEventLoop"
    assert expected in loop_classes
    # The echo handler's fd is a socket the target really has open.
    handler = next(t for t in live_doc["tasks"] if t["frames"] and t["frames"][0]["function"] == "echo")
    assert os.readlink(f"/proc/{target.pid}/fd/{handler['awaiting']['fd']}").startswith("socket:")


def test_every_wait_from_core(stock_target, core_doc):
    assert core_doc["live"] is False
    check_every_wait(core_doc, stock_target.info, live=False)
    assert all("remaining_s" not in t["awaiting"] for t in core_doc["tasks"])


def test_target_keeps_serving_after_detach(target, live_doc):
    assert target.echo(b"before\n") == b"before\n"
    from diag.backtrace.gdbrun import collect_document
    again = collect_document(pid=target.pid)
    assert len(again["tasks"]) == TASK_COUNT
    assert target.echo(b"after\n") == b"after\n"
    assert target.proc.poll() is None


def test_gdb_commands_text(stock_target):
    """coro bt / list --group / tree / locals in one gdb session, as a person would type them."""
    from diag.backtrace.gdbrun import gdb_command, run_gdb
    cmds = ("coro bt sleeper", "echo ==group==\\n", "coro list --group", "echo ==tree==\\n", "coro tree",
            "echo ==locals==\\n", "coro locals sock-reader", "echo ==locals0==\\n", "coro locals lock-waiter 0")
    out = run_gdb(gdb_command(pid=stock_target.pid, commands=cmds), 60).stdout
    bt, rest = out.split("==group==")
    group, rest = rest.split("==tree==")
    tree, rest = rest.split("==locals==")
    locals_inner, locals0 = rest.split("==locals0==")
    assert re.search(rf"Task 0x[0-9a-f]+ 'sleeper' pending", bt)
    assert f"{EXAMPLE}:{MARK['sleeper'][0]} in sleeper (coroutine)" in bt
    assert f"{EXAMPLE}:{MARK['nap'][0]} in nap (coroutine)" in bt
    assert "-> sleep until loop time" in bt
    # Four children wait on the same Event from the same line: one group of 4.
    assert re.search(r"^\s+4 x  pending  awaiting event", group, re.M)
    assert f"{TASK_COUNT} tasks in" in group
    assert re.search(r"cycles:\n  0x[0-9a-f]+ 'cycle-(a|b)' -> 0x[0-9a-f]+ 'cycle-(a|b)' -> 0x[0-9a-f]+ 'cycle-\1'", tree)
    assert "in BaseSelectorEventLoop.sock_recv" in locals_inner
    assert re.search(r"^  n = 100$", locals_inner, re.M)
    assert re.search(rf"^  fd = {stock_target.info['sock_fd']}$", locals_inner, re.M)
    assert f"#0 {EXAMPLE}:{MARK['lock_waiter'][0]} in lock_waiter" in locals0
    assert re.search(r"^  lock = <Lock object at 0x[0-9a-f]+>$", locals0, re.M)


def test_cli_text_and_json(stock_target):
    r = run(COROSCOPE + ["bt", str(stock_target.pid)], cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert f"pid {stock_target.pid}: {TASK_COUNT} tasks" in r.stdout
    assert f"{EXAMPLE}:{MARK['event'][0]} in event_waiter (coroutine)" in r.stdout
    r = run(COROSCOPE + ["bt", str(stock_target.pid), "--json"], cwd=ROOT)
    tasks = json.loads(r.stdout)
    assert isinstance(tasks, list) and len(tasks) == TASK_COUNT
    for t in tasks:
        assert {"id", "name", "state", "frames", "awaiting"} <= set(t)
        assert "kind" in t["awaiting"]
        assert all({"file", "line", "function"} <= set(f) for f in t["frames"])


def test_same_result_without_debug_info(target, live_doc, tmp_path):
    """Hide every DWARF section from gdb: it reads stripped copies of each mapped file."""
    require("objcopy")
    stock_target = target
    sysroot = tmp_path / "sysroot"
    for path in mapped_files(stock_target.pid):
        dest = sysroot / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if run(["objcopy", "--strip-debug", path, str(dest)]).returncode != 0:
            shutil.copy(path, dest)
    empty = tmp_path / "no-debug-files"
    empty.mkdir()
    exe = str(sysroot / os.path.realpath(f"/proc/{stock_target.pid}/exe").lstrip("/"))
    from diag.backtrace.gdbrun import gdb_command, parse_document, run_gdb
    cmd = gdb_command(pid=stock_target.pid, exe=exe, commands=("coro layout", "coro json"),
                      pre=(f"set sysroot {sysroot}", f"set debug-file-directory {empty}"))
    result = run_gdb(cmd, 120)
    version = "%d.%d" % sys.version_info[:2]
    assert f"PyGenObject: table:{version}" in result.stdout and ": dwarf" not in result.stdout
    published = re.search(r"published _Py_DebugOffsets: (\d+) offsets agree", result.stdout)
    assert (published is not None) == (sys.version_info[:2] >= (3, 13))  # published from 3.13
    stripped = parse_document(result, "stripped")
    assert stripped["layout"] == f"CPython {version}, offsets from table:{version}"
    dwarf = {k: v for k, v in live_doc.items() if k not in ("layout", "memory_reads")}
    table = {k: v for k, v in stripped.items() if k not in ("layout", "memory_reads")}
    for doc in (dwarf, table):
        for t in doc["tasks"]:
            t["awaiting"].pop("remaining_s", None)
    assert table == dwarf


def mapped_files(pid: int) -> list[str]:
    out = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith("/") and os.path.isfile(parts[5]):
                out.add(parts[5])
    return sorted(out)


def core_offset(core: Path, address: int) -> int:
    """File offset of a virtual address in an ELF64 core (its PT_LOAD program headers)."""
    with open(core, "rb") as f:
        head = f.read(64)
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
        if p_type == 1 and p_vaddr <= address < p_vaddr + p_filesz:
            return p_offset + address - p_vaddr
    raise AssertionError(f"{address:#x} is not in the core")


def layout_table():
    """The offsets of the running interpreter's table (the layer loads without gdb)."""
    sys.path.insert(0, str(ROOT / "gdb"))
    try:
        import coroscope_layouts
    finally:
        sys.path.remove(str(ROOT / "gdb"))
    return coroscope_layouts.table_for(sys.version_info[:2]).OFFSETS


def test_unreadable_object_in_a_corrupt_core(core_file, core_doc, tmp_path):
    """Corrupt what nap() awaits in one task: that task keeps its first frames and says which
    object could not be read; every other task is intact."""
    from diag.backtrace.gdbrun import collect_document
    off = layout_table()
    sleeper = by_name(core_doc)["sleeper"]
    nap_frame = int(sleeper["frames"][1]["frame"], 16)
    corrupt = tmp_path / "corrupt.core"
    shutil.copy(core_file, corrupt)
    bad = 0xDEAD0000
    with open(corrupt, "r+b") as f:
        f.seek(core_offset(corrupt, nap_frame + off["_PyInterpreterFrame.stacktop"]))
        stacktop, = struct.unpack("<i", f.read(4))
        top_of_stack = nap_frame + off["_PyInterpreterFrame.localsplus"] + 8 * (stacktop - 1)
        f.seek(core_offset(corrupt, top_of_stack))
        f.write(struct.pack("<Q", bad))
    doc = collect_document(core=str(corrupt), exe=python_exe())
    broken = by_name(doc)["sleeper"]
    assert broken["error"] == f"<unreadable at {bad:#x}>"
    assert [f["function"] for f in broken["frames"]] == ["sleeper", "nap"]
    others = [t for t in doc["tasks"] if t["name"] != "sleeper"]
    assert len(others) == TASK_COUNT - 1 and not any("error" in t for t in others)
    assert by_name(doc)["queue-getter"]["awaiting"]["kind"] == "queue"

    r = run(COROSCOPE + ["bt", "--core", str(corrupt), "--exe", python_exe()], cwd=ROOT)
    assert r.returncode == 0, r.stderr
    block = next(b for b in r.stdout.split("\n\n") if "'sleeper'" in b)
    assert block.splitlines()[-2:] == [f"  <unreadable at {bad:#x}>", "  -> unknown"]
    assert f"{TASK_COUNT} tasks" in r.stdout


def test_not_a_python_process_gives_one_line(tmp_path):
    require("gdb", "ptrace")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        r = run(COROSCOPE + ["bt", str(sleeper.pid)], cwd=ROOT)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert r.returncode == 2
    assert r.stderr.strip() == f"coroscope: error: pid {sleeper.pid}: not a Python process: no _PyRuntime symbol in the program or its libraries"
    assert r.stdout == ""


def test_bad_targets(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    r = run(COROSCOPE + ["bt", str(dead.pid)], cwd=ROOT)
    assert (r.returncode, r.stderr.strip()) == (2, f"coroscope: error: no process with pid {dead.pid}")
    junk = tmp_path / "junk.core"
    junk.write_bytes(b"not a core")
    r = run(COROSCOPE + ["bt", "--core", str(junk), "--exe", python_exe()], cwd=ROOT)
    assert (r.returncode, r.stderr.strip()) == (2, f"coroscope: error: {junk} is not a core file (not ELF)")
