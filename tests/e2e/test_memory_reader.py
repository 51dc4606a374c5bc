"""coroscope's own memory reader (process_vm_readv) against gdb, against a churning target, and bad input.

The suspended-tasks target is the one test_gdb_backtrace.py reads through gdb; here the same
process is read both ways and the documents compared whole.  The churn target creates and
finishes tasks as fast as it can while the reader samples it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.capabilities import require, run
from tests.other_user import other_user
from tests.e2e.test_gdb_backtrace import COROSCOPE, ROOT, TASK_COUNT, start_target

# Keys only one of the two readers has, or that say how the reading went rather than what it read.
READER_ONLY = {"layout", "memory_reads", "reader", "asyncio", "torn", "vanished", "retried", "seconds"}


def comparable(doc: dict) -> dict:
    out = {k: v for k, v in doc.items() if k not in READER_ONLY}
    for t in out["tasks"]:
        t["awaiting"].pop("remaining_s", None)  # measured at two different moments
    return out


def differences(mine: dict, theirs: dict) -> list:
    """What differs between two comparable documents, task by task, so a failure names the field."""
    a, b = comparable(mine), comparable(theirs)
    out = [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
           if k != "tasks" and a.get(k) != b.get(k)]
    ta = {t["address"]: t for t in a["tasks"]}
    tb = {t["address"]: t for t in b["tasks"]}
    for addr in sorted(set(ta) | set(tb)):
        x, y = ta.get(addr), tb.get(addr)
        if x is None or y is None:
            out.append((addr, "only in " + ("gdb's" if x is None else "the reader's"), (x or y)["name"]))
            continue
        out += [(f"{x['name']}.{k}", x.get(k), y.get(k)) for k in sorted(set(x) | set(y))
                if x.get(k) != y.get(k)]
    if not out and [t["address"] for t in a["tasks"]] != [t["address"] for t in b["tasks"]]:
        out.append(("tasks", "same tasks in another order", None))
    return out


@pytest.fixture(scope="module", params=["asyncio", "runtime"])
def target(request):
    require("ptrace")
    t = start_target(request.param)
    yield t
    t.close()


def test_same_json_as_gdb_live(target):
    require("gdb")
    from diag.backtrace.gdbrun import collect_document as through_gdb
    from diag.backtrace.reader import collect_document as from_outside
    mine = from_outside(target.pid)
    assert (mine["torn"], mine["vanished"]) == (0, 0)
    assert len(mine["tasks"]) == TASK_COUNT
    assert mine["layout"].endswith("read by process_vm_readv")
    theirs = through_gdb(pid=target.pid)
    assert differences(mine, theirs) == []
    assert target.echo() == b"ping\n"


def test_cli_uses_the_reader_and_gdb_on_request(target):
    require("gdb")
    own = run(COROSCOPE + ["bt", str(target.pid), "--json"], cwd=ROOT, timeout=120)
    via_gdb = run(COROSCOPE + ["bt", str(target.pid), "--json", "--gdb"], cwd=ROOT, timeout=120)
    assert own.returncode == 0 and via_gdb.returncode == 0, own.stderr + via_gdb.stderr
    a, b = json.loads(own.stdout), json.loads(via_gdb.stdout)
    for doc in (a, b):
        for t in doc:
            t["awaiting"].pop("remaining_s", None)
    assert a == b and len(a) == TASK_COUNT
    text = run(COROSCOPE + ["bt", str(target.pid)], cwd=ROOT, timeout=120)
    assert "read by process_vm_readv" in text.stdout


def test_the_target_is_never_traced(target):
    """The reader does not attach: no tracer, and the target's state never becomes 't'."""
    from diag.backtrace.reader import Reader
    reader = Reader(target.pid)
    try:
        for _ in range(3):
            reader.document()
            status = Path(f"/proc/{target.pid}/status").read_text()
            assert "TracerPid:\t0" in status
    finally:
        reader.close()


# -- torn reads ----------------------------------------------------------------------------

CHURN_CHAIN = ["churn_outer", "churn_inner", "sleep"]


def test_churning_target_no_invented_chain():
    require("ptrace")
    proc = subprocess.Popen([sys.executable, "-m", "examples.task_churn", "--width", "200"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = json.loads(proc.stdout.readline())["pid"]
        from diag.backtrace.reader import Reader
        reader = Reader(pid)
        totals = {"torn": 0, "retried": 0, "vanished": 0, "printed": 0, "steady": 0}
        try:
            for _ in range(25):
                doc = reader.document()
                for key in ("torn", "retried", "vanished"):
                    totals[key] += doc[key]
                torn_records = [t for t in doc["tasks"] if t["state"] == "torn"]
                assert len(torn_records) == doc["torn"]
                for t in doc["tasks"]:
                    names = [f["function"] for f in t["frames"]]
                    if t["state"] == "torn":
                        assert names == [] and t["awaiting"] == {"kind": "torn"}
                    elif t["name"].startswith("steady-"):
                        totals["steady"] += 1
                        assert names == ["steady_waiter", "Event.wait"]
                        assert t["awaiting"]["kind"] == "event"
                    elif t["name"].startswith("churn-") and t["state"] not in ("done", "cancelled"):
                        totals["printed"] += 1
                        # Every frame printed is a frame this program has, in the order it has them:
                        # the chain's coroutines, then, for a task caught running on the loop's
                        # thread, what its innermost coroutine was calling in asyncio itself.
                        chain = [f for f in t["frames"] if f["kind"] != "running" or f["function"] in CHURN_CHAIN]
                        called = t["frames"][len(chain):]
                        assert [f["function"] for f in chain] == CHURN_CHAIN[:len(chain)] and chain, (names, t)
                        for f in chain:
                            assert f["file"].endswith(("task_churn.py", "asyncio/tasks.py"))
                        assert all(f["kind"] == "running" and "/asyncio/" in f["file"] for f in called), t
                        assert not called or t["state"] == "running", t
        finally:
            reader.close()
        # The ten steady tasks never change: they are read whole every time.
        assert totals["steady"] == 25 * 10
        # Tasks live about a millisecond here: reads race with them, and the races are counted.
        assert totals["torn"] + totals["retried"] + totals["vanished"] > 0, totals
    finally:
        proc.kill()
        proc.wait()


# -- bad input, one line each --------------------------------------------------------------

def test_pid_gone_mid_read():
    require("ptrace")
    t = start_target("asyncio")
    from diag.backtrace.reader import Reader
    from diag.errors import TargetGone
    reader = Reader(t.pid)
    try:
        proc = reader.process()  # the interpreter found, tasks not yet walked
        t.close()                # killed and reaped
        with pytest.raises(TargetGone) as info:
            reader.records(proc)
            reader._gone_check()
        assert str(info.value) == f"process {t.pid} exited while its memory was being read"
    finally:
        reader.close()


def test_non_python_pid_one_line():
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        r = run(COROSCOPE + ["bt", str(sleeper.pid)], cwd=ROOT)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert "not a Python process" in r.stderr


def test_python_without_asyncio_zero_tasks_said_so():
    require("ptrace")
    code = "import sys, time; print('asyncio' in sys.modules, flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "False"
        r = run(COROSCOPE + ["bt", str(proc.pid), "--json"], cwd=ROOT)
    finally:
        proc.kill()
        proc.wait()
    assert r.returncode == 0 and json.loads(r.stdout) == []
    assert r.stderr.strip() == f"coroscope: pid {proc.pid} has not imported asyncio: 0 tasks"


def test_no_permission_one_line():
    """Another user may not read a root process: one line saying what is missing."""
    victim = subprocess.Popen([sys.executable, "-c", "import asyncio, time; time.sleep(60)"])
    try:
        with other_user() as nobody:    # a copy of the CLI nobody can read, wherever the checkout is
            r = nobody.coroscope("bt", str(victim.pid))
    finally:
        victim.kill()
        victim.wait()
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [f"coroscope: error: may not read the memory of pid {victim.pid}: it belongs to "
                     f"uid 0, this is uid 65534 (run as root or as that user)"], r.stderr


# -- await-mode flame graphs of a pid coroscope did not start --------------------------------

TWO_PLACES = """
import asyncio, json, os, random, sys, time
A_S, B_S = 0.030, 0.010          # each task waits 30 ms in place_a, then 10 ms in place_b
async def place_a():
    await asyncio.sleep(A_S * random.uniform(0.5, 1.5))
async def place_b():
    await asyncio.sleep(B_S * random.uniform(0.5, 1.5))
async def worker(spent):
    await asyncio.sleep(random.random() * 0.04)      # out of step with each other
    while True:
        t0 = time.monotonic(); await place_a(); t1 = time.monotonic()
        await place_b(); t2 = time.monotonic()
        spent[0] += t1 - t0; spent[1] += t2 - t1
async def main():
    spent = [0.0, 0.0]
    tasks = [asyncio.create_task(worker(spent), name=f"w{i}") for i in range(20)]
    await asyncio.sleep(0.3)
    print(json.dumps({"pid": os.getpid()}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)      # the test says when sampling is over
    print(json.dumps({"a": spent[0], "b": spent[1]}), flush=True)
asyncio.run(main())
"""


def test_await_flame_on_a_pid_not_started_by_coroscope(tmp_path):
    """Two groups of waits in two known places: shares near the time spent there."""
    require("ptrace")
    from diag.flame import formats
    target = subprocess.Popen([sys.executable, "-c", TWO_PLACES], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        pid = json.loads(target.stdout.readline())["pid"]
        out = tmp_path / "await.collapsed.txt"
        r = run(COROSCOPE + ["flame", "--pid", str(pid), "--mode", "await", "--duration", "3",
                             "-o", str(out)], cwd=tmp_path, timeout=60)
        target.stdin.write("\n")
        target.stdin.flush()
        spent = json.loads(target.stdout.readline())
    finally:
        target.kill()
        target.wait()
    assert r.returncode == 0, r.stderr
    stacks = formats.parse_collapsed(out.read_text())
    total = sum(stacks.values())
    a = sum(w for k, w in stacks.items() if any(f.startswith("place_a (") for f in k))
    b = sum(w for k, w in stacks.items() if any(f.startswith("place_b (") for f in k))
    assert total >= 20 * 20, total     # 20 tasks, at least 20 of the ~60 samples asked
    # The truth: the time the workers spent in each place, measured inside (main's own chain,
    # one task of 21, is in neither place).
    truth_a = spent["a"] / (spent["a"] + spent["b"])
    # Sampled at 20 Hz for 3 s, 20 tasks: some 1,200 task-samples, whose share is within about
    # 1.3 points of the time share by chance alone; a sample that put a task in the wrong place
    # (checked against a log of every move, timestamped inside the target) was 0-4 in 1,200.
    assert abs(a / (a + b) - truth_a) < 0.05, (a / (a + b), truth_a)
    assert (a + b) / total > 0.9, (a, b, total)


def test_await_flame_by_task_from_outside(tmp_path):
    require("ptrace")
    t = start_target("asyncio")
    try:
        out = tmp_path / "by-task.collapsed.txt"
        r = run(COROSCOPE + ["flame", "--pid", str(t.pid), "--mode", "await", "--by", "task",
                             "--duration", "1", "-o", str(out)], cwd=tmp_path, timeout=60)
    finally:
        t.close()
    assert r.returncode == 0, r.stderr
    from diag.flame import formats
    stacks = formats.parse_collapsed(out.read_text())
    roots = {k[0] for k in stacks}
    assert {"[task: sleeper]", "[task: lock-waiter]", "[task: event-waiter]"} <= roots
    sleeper = [k for k in stacks if k[0] == "[task: sleeper]"]
    assert len(sleeper) == 1 and sleeper[0][-1] == "[sleep]"
    assert [f.split(" (")[0] for f in sleeper[0][1:4]] == ["sleeper", "nap", "sleep"]


# -- other CPython versions ----------------------------------------------------------------

def _pyenv_python(version: str) -> str | None:
    root = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
    for d in sorted(root.glob(f"{version}.*"), reverse=True) if root.is_dir() else ():
        exe = d / "bin" / "python3"
        if exe.exists():
            return str(exe)
    return shutil.which(f"python{version}")


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_same_json_as_gdb_on_other_versions(version):
    """Stock asyncio on each other supported CPython: the reader and gdb agree."""
    require("gdb", "ptrace")
    exe = _pyenv_python(version)
    if exe is None:
        pytest.skip(f"CPython {version} is not installed")
    from diag.backtrace.gdbrun import collect_document as through_gdb
    from diag.backtrace.reader import collect_document as from_outside
    from diag.errors import CoroscopeError
    proc = subprocess.Popen([exe, "-m", "examples.suspended_tasks"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        pid = json.loads(proc.stdout.readline())["pid"]
        try:
            mine = from_outside(pid)
        except CoroscopeError as exc:
            if "no coroscope_layout_py" in str(exc):
                pytest.skip(str(exc))   # the layout layer has no table for this version yet
            raise
        assert mine["python"] == version and (mine["torn"], mine["vanished"]) == (0, 0)
        assert len(mine["tasks"]) == TASK_COUNT
        assert differences(mine, through_gdb(pid=pid)) == []
    finally:
        proc.kill()
        proc.wait()


# -- requests, from a task's context -------------------------------------------------------

REQUESTS = """
import asyncio, json, os, sys, runtime.requests as rq
async def dependency(i):
    await asyncio.sleep(3600)
ids = {"idle": 0}
async def handler(i):
    with rq.request(f"GET /items/{{n}}"):
        ids[f"h{i}"] = rq.REQUEST_ID.get()
        # the child inherits the request through its copy of the context
        await asyncio.gather(dependency(i), asyncio.sleep(3600))
async def idle():
    await asyncio.sleep(3600)
async def main():
    tasks = [asyncio.create_task(handler(i), name=f"h{i}") for i in range(3)]
    tasks.append(asyncio.create_task(idle(), name="idle"))
    await asyncio.sleep(0.2)
    print(json.dumps({"pid": os.getpid(), "ids": ids}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
asyncio.run(main())
"""


def test_requests_of_tasks_read_from_outside(tmp_path):
    """Each task's request comes from its context: ``bt`` JSON and ``flame --by request``, on a
    process coroscope did not start."""
    require("ptrace")
    target = subprocess.Popen([sys.executable, "-c", REQUESTS], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        hello = json.loads(target.stdout.readline())
        pid, ids = hello["pid"], hello["ids"]
        from diag.backtrace.reader import collect_document
        doc = collect_document(pid)
        out = tmp_path / "by-request.collapsed.txt"
        r = run(COROSCOPE + ["flame", "--pid", str(pid), "--mode", "await", "--by", "request",
                             "--duration", "1", "-o", str(out)], cwd=tmp_path, timeout=60)
    finally:
        target.kill()
        target.wait()
    by_name = {t["name"]: t for t in doc["tasks"]}
    assert sorted(ids[f"h{i}"] for i in range(3)) == sorted({ids[f"h{i}"] for i in range(3)})
    for i in range(3):
        assert by_name[f"h{i}"]["request"] == ids[f"h{i}"] > 0
    assert "request" not in by_name["idle"] and ids["idle"] == 0
    children = [t for t in doc["tasks"] if t["frames"] and t["frames"][0]["function"] == "dependency"]
    assert sorted(t["request"] for t in children) == sorted(ids[f"h{i}"] for i in range(3))
    assert r.returncode == 0, r.stderr
    from diag.flame import formats
    stacks = formats.parse_collapsed(out.read_text())
    roots = {k[0] for k in stacks}
    assert {f"[request: {ids[f'h{i}']}]" for i in range(3)} | {"[no request]"} == roots, roots
    under = [k for k in stacks if k[0] == f"[request: {ids['h0']}]"]
    assert any(f.startswith("dependency (") for k in under for f in k), under
