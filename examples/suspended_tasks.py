"""A process whose asyncio tasks sit suspended in every kind of wait that ``coroscope bt`` names.

    python -m examples.suspended_tasks [--loop asyncio|runtime] [--extra N]

When every task is suspended it prints one JSON line on stdout, ``{"ready": true, "pid": ...,
"port": ...}``, and then serves a line echo server on 127.0.0.1:PORT until killed (so a test can
check it still serves after a debugger detached).  Each await a test looks for carries a
``# bt:<tag>`` comment; tests find the expected line numbers by reading those comments.

Tasks (by name): sleeper, sock-reader, lock-holder, lock-waiter, event-waiter, queue-getter,
semaphore-waiter, condition-waiter,
gather-parent (+2 children), tg-parent (+2 children), agen-consumer (awaits inside an async
generator), generator-waiter (awaits through a ``yield from`` generator), thread-waiter, cycle-a and cycle-b (each
awaits the other), future-owner and future-waiter, cancelling (cancelled once, caught it, waits again), the echo server's main task, one handler
waiting on an idle connection, and on a second thread, with its own loop, ``running``: a task
that is running (blocked in time.sleep) when a debugger attaches.  ``--extra N`` adds N more
tasks (half sleeping, half waiting on an Event) for the scale benchmark.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import threading
import time
import types

FOREVER = 3600 * 24


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "runtime":
        import runtime
        return runtime.new_event_loop()
    return asyncio.new_event_loop()


async def nap(seconds):
    await asyncio.sleep(seconds)  # bt:nap


async def sleeper():
    await nap(FOREVER)  # bt:sleeper


async def sock_reader(sock):
    loop = asyncio.get_running_loop()
    return await loop.sock_recv(sock, 100)  # bt:sock_recv


async def lock_holder(lock, held):
    async with lock:
        held.set()
        await asyncio.sleep(FOREVER)  # bt:lock_holder


async def lock_waiter(lock):
    async with lock:  # bt:lock_waiter
        pass


async def event_waiter(event):
    await event.wait()  # bt:event


async def semaphore_waiter(sem):
    async with sem:  # bt:semaphore
        pass


async def condition_waiter(cond):
    async with cond:
        await cond.wait()  # bt:condition


async def queue_getter(queue):
    return await queue.get()  # bt:queue


async def child(event):
    await event.wait()  # bt:child


async def gather_parent(event):
    await asyncio.gather(child(event), child(event))  # bt:gather


async def tg_parent(event):
    async with asyncio.TaskGroup() as tg:  # bt:taskgroup
        tg.create_task(child(event), name="tg-child-1")
        tg.create_task(child(event), name="tg-child-2")


INFO: dict = {}  # facts a test checks against, printed in the ready line


async def ticker(event):
    while True:
        await event.wait()  # bt:agen
        yield 1


async def agen_consumer(event):
    async for _ in ticker(event):  # bt:agen_consumer
        pass


@types.coroutine
def legacy_wait(fut):
    return (yield from fut)  # bt:generator


async def generator_waiter(fut):
    return await legacy_wait(fut)  # bt:generator_waiter


def blocking_wait(stop: threading.Event, entered: threading.Event):
    INFO["executor_tid"] = threading.get_native_id()
    entered.set()
    stop.wait()  # bt:thread_fn


async def thread_waiter(stop, entered):
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, blocking_wait, stop, entered)  # bt:thread


CYCLE: dict[str, asyncio.Task] = {}


async def cycle_member(other: str):
    await asyncio.sleep(0)  # both tasks exist after one turn of the loop
    await CYCLE[other]  # bt:cycle


async def future_owner(box: list):
    fut = asyncio.get_running_loop().create_future()
    box.append(fut)
    await asyncio.sleep(FOREVER)  # bt:future_owner


async def future_waiter(box: list):
    while not box:
        await asyncio.sleep(0)
    await box[0]  # bt:future


async def stubborn():
    try:
        await asyncio.sleep(FOREVER)
    except asyncio.CancelledError:
        await asyncio.sleep(FOREVER)  # bt:cancelling


async def extra_worker(i: int, event):
    if i % 2:
        await nap(FOREVER)  # bt:extra_sleep
    else:
        await child(event)  # bt:extra_event


async def echo(reader, writer):
    line = await reader.readline()  # bt:stream
    while line:
        writer.write(line)
        await writer.drain()
        line = await reader.readline()  # bt:stream
    writer.close()


async def busy(started: threading.Event):
    INFO["running_tid"] = threading.get_native_id()
    started.set()
    time.sleep(FOREVER)  # bt:running


def running_thread(kind: str, started: threading.Event):
    async def running():
        await busy(started)  # bt:running_outer

    loop = new_loop(kind)
    loop.run_until_complete(running())


async def main(kind: str, extra: int):
    loop = asyncio.get_running_loop()
    keep = []  # strong references: tasks are only weakly held by asyncio
    event, never = asyncio.Event(), threading.Event()
    lock, held = asyncio.Lock(), asyncio.Event()
    queue: asyncio.Queue = asyncio.Queue()
    a, b = socket.socketpair()
    a.setblocking(False)
    keep += [a, b]
    spawn = lambda coro, name: keep.append(loop.create_task(coro, name=name))  # noqa: E731
    spawn(sleeper(), "sleeper")
    spawn(sock_reader(a), "sock-reader")
    spawn(lock_holder(lock, held), "lock-holder")
    await held.wait()
    spawn(lock_waiter(lock), "lock-waiter")
    spawn(event_waiter(event), "event-waiter")
    spawn(queue_getter(queue), "queue-getter")
    spawn(semaphore_waiter(asyncio.Semaphore(0)), "semaphore-waiter")
    spawn(condition_waiter(asyncio.Condition()), "condition-waiter")
    spawn(gather_parent(event), "gather-parent")
    spawn(tg_parent(event), "tg-parent")
    spawn(agen_consumer(event), "agen-consumer")
    plain = loop.create_future()
    keep.append(plain)
    spawn(generator_waiter(plain), "generator-waiter")
    entered = threading.Event()
    spawn(thread_waiter(never, entered), "thread-waiter")
    CYCLE["a"] = loop.create_task(cycle_member("b"), name="cycle-a")
    CYCLE["b"] = loop.create_task(cycle_member("a"), name="cycle-b")
    box: list = []
    spawn(future_owner(box), "future-owner")
    spawn(future_waiter(box), "future-waiter")
    doomed = loop.create_task(stubborn(), name="cancelling")
    keep.append(doomed)
    await asyncio.sleep(0)
    doomed.cancel()  # it catches CancelledError and waits again: pending, one cancel requested
    for i in range(extra):
        spawn(extra_worker(i, event), f"extra-{i}")
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    idle = socket.create_connection(("127.0.0.1", port))  # its handler waits in readline
    keep.append(idle)
    started = threading.Event()
    threading.Thread(target=running_thread, args=(kind, started), daemon=True, name="running").start()
    started.wait(10)
    entered.wait(10)
    INFO["sock_fd"] = a.fileno()
    for _ in range(20):
        await asyncio.sleep(0.01)
    # Announced from a callback, which runs only once this task has suspended in serve_forever:
    # printing here would let a reader that starts at the line see this task still running.
    loop.call_soon(lambda: print(json.dumps({"ready": True, "pid": os.getpid(), "port": port,
                                             "loop": type(loop).__name__, **INFO}), flush=True))
    async with server:
        await server.serve_forever()  # bt:main


def cli(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", choices=["asyncio", "runtime"], default="asyncio")
    parser.add_argument("--extra", type=int, default=0)
    args = parser.parse_args(argv)
    loop = new_loop(args.loop)
    asyncio.set_event_loop(loop)
    main_task = loop.create_task(main(args.loop, args.extra), name="main")
    loop.run_until_complete(main_task)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
