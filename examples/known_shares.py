"""A program whose profile is known in advance, for checking flame graphs against the truth.

- ``cpu_worker`` burns CPU in rounds: 7 ms in ``f``, 2 ms in ``g``, 1 ms in ``other_work``, then
  yields to the loop; so of the main thread's CPU, f gets ~70% and g ~20%.
- ``h`` awaits ``asyncio.sleep`` directly for 80 ms, then ``other_wait`` (another sleep) for
  20 ms, in a loop: ~80% of its wall time awaiting the sleep in h itself.

Time is measured with thread CPU time (``time.thread_time``), so a busy machine changes the
wall time of a round but not the shares. At exit the program writes what it really did
(seconds of CPU in f, g and in total; seconds h spent in each await) to the JSON file given by
``--truth``, and tests compare the profile with that.

    python -m examples.known_shares --duration 5 --truth truth.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

F_MS, G_MS, OTHER_MS = 7.0, 2.0, 1.0
H_SLEEP_S, H_OTHER_S = 0.08, 0.02

truth = {"f_cpu": 0.0, "g_cpu": 0.0, "other_cpu": 0.0, "thread_cpu": 0.0,
         "h_sleep": 0.0, "h_other": 0.0, "h_wall": 0.0}


def _burn(ms: float) -> float:
    """Spend ``ms`` of this thread's CPU on arithmetic; return the CPU seconds it took."""
    start = time.thread_time()
    end = start + ms / 1000.0
    x = 0
    while True:
        for i in range(200):
            x = (x * 31 + i) % 1000003
        now = time.thread_time()
        if now >= end:
            return now - start


def f() -> None:
    truth["f_cpu"] += _burn(F_MS)


def g() -> None:
    truth["g_cpu"] += _burn(G_MS)


def set_work(f_ms: float, g_ms: float) -> None:
    """Change the split (a "regression" for trying ``coroscope flame diff``)."""
    global F_MS, G_MS
    F_MS, G_MS = f_ms, g_ms


def other_work() -> None:
    truth["other_cpu"] += _burn(OTHER_MS)


async def cpu_worker(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        f()
        g()
        other_work()
        await asyncio.sleep(0)


async def other_wait() -> None:
    await asyncio.sleep(H_OTHER_S)


async def h(stop_at: float) -> None:
    started = time.perf_counter()
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        await asyncio.sleep(H_SLEEP_S)
        t1 = time.perf_counter()
        await other_wait()
        t2 = time.perf_counter()
        truth["h_sleep"] += t1 - t0
        truth["h_other"] += t2 - t1
    truth["h_wall"] = time.perf_counter() - started


async def main(duration: float) -> None:
    stop_at = time.monotonic() + duration
    cpu0 = time.thread_time()
    await asyncio.gather(asyncio.create_task(cpu_worker(stop_at), name="cpu_worker"),
                         asyncio.create_task(h(stop_at), name="h"))
    truth["thread_cpu"] = time.thread_time() - cpu0


def shares() -> dict:
    """The true shares: CPU ones of the main thread's CPU, await ones of h's wall time."""
    cpu = truth["thread_cpu"] or 1.0
    hw = (truth["h_sleep"] + truth["h_other"]) or 1.0
    return {"f": truth["f_cpu"] / cpu, "g": truth["g_cpu"] / cpu,
            "h_sleep": truth["h_sleep"] / hw, "h_other": truth["h_other"] / hw}


def cli(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--truth", help="write the measured truth (JSON) here at exit")
    parser.add_argument("--f-ms", type=float, default=F_MS, help="CPU ms in f per round (7)")
    parser.add_argument("--g-ms", type=float, default=G_MS, help="CPU ms in g per round (2)")
    args = parser.parse_args(argv)
    set_work(args.f_ms, args.g_ms)
    asyncio.run(main(args.duration))
    if args.truth:
        with open(args.truth, "w") as out:
            json.dump({"seconds": truth, "shares": shares()}, out, indent=2)


if __name__ == "__main__":
    cli()
