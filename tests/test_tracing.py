"""Requests (ids through contextvars, per data_received), the thread slot seen from outside while
a step runs, and tracing's on/off/fork life cycle. Tracing-on cases run in child processes:
TRACE is process-wide and the test process must stay untraced."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import runtime
from diag.probe import ProbeReader
from runtime.requests import current_request, per_data_received, request

PY = sys.executable


def test_request_id_follows_into_child_tasks():
    seen = {}

    async def child(tag):
        await asyncio.sleep(0)
        seen[tag] = current_request()

    async def main():
        assert current_request() == 0
        with request("outer") as outer:
            await asyncio.gather(child("a"), asyncio.create_task(child("b")))
            with request("inner") as inner:
                await asyncio.create_task(child("c"))
            seen["after_inner"] = current_request()
        seen["outside"] = current_request()
        return outer.id, inner.id

    outer_id, inner_id = runtime.run(main())
    assert outer_id and inner_id and outer_id != inner_id
    assert seen == {"a": outer_id, "b": outer_id, "c": inner_id, "after_inner": outer_id,
                    "outside": 0}


def test_request_as_decorator_gives_one_request_per_call():
    @request("handler")
    async def handler():
        await asyncio.sleep(0)
        return current_request()

    @request("sync")
    def sync_handler():
        return current_request()

    async def main():
        return [await handler() for _ in range(3)] + [sync_handler()]

    ids = runtime.run(main())
    assert len(set(ids)) == 4 and 0 not in ids
    assert current_request() == 0


def test_per_data_received_makes_each_call_one_request():
    seen = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            seen.append(current_request())
            self.transport.write(data)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(per_data_received(Echo), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(5):                 # wait for each echo: one data_received per message
            writer.write(b"x\n")
            await reader.readline()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    runtime.run(main())
    assert len(seen) == 5 and len(set(seen)) == 5 and 0 not in seen


SLOT_TARGET = textwrap.dedent("""
    import asyncio, sys, threading
    import runtime
    from runtime import tracing
    tracing.enable()

    async def blocked():
        print("in-step", flush=True)
        sys.stdin.readline()          # blocks inside the step until the test has looked
        await asyncio.sleep(0)

    async def main():
        with runtime.request("watched") as req:
            task = asyncio.create_task(blocked(), name="blocked")
            await task
        print(req.id, flush=True)
        sys.stdin.readline()

    runtime.run(main())
""")


def test_thread_slot_shows_the_running_task_and_request_from_outside():
    proc = subprocess.Popen([PY, "-c", SLOT_TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "in-step"
        with ProbeReader.attach(proc.pid) as reader:
            threads = reader.threads()
            records = reader.poll()
            proc.stdin.write("\n")
            proc.stdin.flush()
            request_id = int(proc.stdout.readline())
            after = reader.threads()
        # asyncio.create_task(name=) names the task after creating it up to 3.12 (a task_name
        # record) and passes the name to the loop from 3.13 (the task_create record's)
        names = {r.task: r.fields["name"] for r in records if r.kind == "task_create"}
        names.update({r.task: r.fields["name"] for r in records if r.kind == "task_name"})
        named = {task for task, name in names.items() if name == "blocked"}
        assert len(threads) == 1 and threads[0].tid == proc.pid
        assert {threads[0].task} == named
        assert threads[0].request == request_id
        assert threads[0].step_running_ns > 0
        # Now main's step blocks (outside the request): the slot says so.
        main = [r.task for r in records if r.kind == "task_create" and r.fields["coro"] == "main"]
        assert (after[0].task, after[0].request) == (main[0], 0) and after[0].step_running_ns > 0
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


FORK_TARGET = textwrap.dedent("""
    import mmap, os, sys
    from runtime import probefile as pf, tracing

    def regions():
        # (the pid each of this process's probe regions names), through /proc as a reader finds them
        out = []
        for path in pf.region_paths(os.getpid()):
            with open(path, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                out.append(pf.parse_header(mm).pid)
                mm.close()
        return out

    tracing.enable()
    pid = os.fork()
    if pid == 0:
        ok = regions() == [os.getpid()]          # its own, and not its parent's
        tracing.disable()
        os._exit(0 if ok and regions() == [] else 1)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), regions() == [os.getpid()])
    tracing.disable()
    print(regions() == [])
""")


def test_fork_gets_its_own_probe_region_and_disable_removes_it():
    out = subprocess.run([PY, "-c", FORK_TARGET], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "True", "True"]


def test_enable_from_env_only_when_asked():
    code = "from runtime import tracing; print(tracing.enable_from_env() is not None, tracing.TRACE.on)"
    for value, expected in (("1", "True True"), ("", "False False"), ("0", "False False")):
        out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=30,
                             env={**__import__("os").environ, "COROSCOPE_TRACE": value})
        assert out.stdout.strip() == expected, out.stderr


WAKES_TARGET = textwrap.dedent("""
    import asyncio, gc, json, sys, warnings
    import runtime
    from runtime import tracing
    from diag.probe import ProbeReader
    tracing.enable()
    hooked = warnings._warn_unawaited_coroutine

    async def spins():
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)

    async def idle():
        await asyncio.sleep(3600)

    async def never():
        pass

    async def main():
        loop = asyncio.get_running_loop()
        c = asyncio.create_task(spins(), name="c-task")
        loop.set_task_factory(lambda loop, coro, **kw: asyncio.tasks._PyTask(coro, loop=loop, **kw))
        py = loop.create_task(spins(), name="py-task")
        loop.set_task_factory(None)
        await asyncio.gather(c, py)
        sleeper = asyncio.create_task(idle(), name="sleeper")
        await asyncio.sleep(0)
        loop.call_soon(sleeper.cancel)       # a task's method, not one of its steps
        await asyncio.gather(sleeper, return_exceptions=True)
        # a coroutine collected while the writer holds its lock in this very thread (a cycle
        # collection during an allocation in intern()): kept aside, written at the next chance
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tracing.writer()._lock:
                coro = never()
                del coro
            print(json.dumps({"backlog": len(tracing.TRACE._unawaited_backlog)}), flush=True)
        with warnings.catch_warnings(record=True) as caught:     # the warning is unchanged
            warnings.simplefilter("always")
            coro = never()
            del coro
        print(json.dumps([(w.filename, str(w.message).splitlines()[0]) for w in caught]))
        await asyncio.sleep(0)               # the next task done flushes it

    runtime.run(main())
    reader = ProbeReader.open_file(tracing.writer().path)
    records = reader.poll()
    names = {r.task: r.fields["name"] for r in records if r.kind in ("task_create", "task_name")
             and r.fields["name"] and not r.fields["name"].startswith("Task-")}
    wakes = {}
    for r in records:
        if r.kind == "step_begin" and r.task in names:
            wakes.setdefault(names[r.task], []).append(r.fields["wake"])
    never = [r.fields["coro"] for r in records if r.kind == "coro_never_awaited"]
    depth = sys.get_coroutine_origin_tracking_depth()
    tracing.disable()
    print(json.dumps({"wakes": wakes, "never": never, "depth": depth,
                      "restored": warnings._warn_unawaited_coroutine is not hooked
                      and sys.get_coroutine_origin_tracking_depth() == 0}))
""")


def test_wake_kinds_of_c_and_python_tasks_and_a_deferred_never_awaited_record():
    out = subprocess.run([PY, "-c", WAKES_TARGET], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    first, warned, last = (json.loads(line) for line in out.stdout.splitlines())
    assert first == {"backlog": 1}
    # attributed to the code that dropped it (this -c script), as without the tracer
    assert warned == [["<string>", "coroutine 'never' was never awaited"]]
    # first step, a self-wake (sleep(0)), woken by the timer; the same for the Python Task,
    # told by its bound __step / __wakeup; the sleeper's cancel through call_soon is no step
    assert last["wakes"]["c-task"] == ["first", "self", "woken"]
    assert last["wakes"]["py-task"] == ["first", "self", "woken"]
    assert last["wakes"]["sleeper"] == ["first", "woken"]
    assert last["never"] == ["never", "never"]
    assert last["depth"] == 1 and last["restored"]
