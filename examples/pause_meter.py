"""Run a module with a thread that stamps 1 ms ticks and writes down every gap: a pause meter.

    python -m examples.pause_meter PATH MODULE [ARGS...]

A tool that stops a process (gdb attaching) stops this thread too; one that reads from outside
does not.  Every gap between two ticks longer than 2 ms is appended to PATH as
``start end`` (time.monotonic, which every process on the machine shares), so a benchmark can
ask for the longest pause in the window its command ran.  The module then runs as ``__main__``
with ARGS, unchanged: the target is the same program with one more thread.
"""
from __future__ import annotations

import os
import runpy
import sys
import threading
import time

GAP_S = 0.002


def ticker(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    last = time.monotonic()
    while True:
        time.sleep(0.001)
        now = time.monotonic()
        if now - last > GAP_S:
            os.write(fd, f"{last:.6f} {now:.6f}\n".encode())
        last = now


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: python -m examples.pause_meter PATH MODULE [ARGS...]")
    path, module, args = argv[0], argv[1], argv[2:]
    threading.Thread(target=ticker, args=(path,), daemon=True, name="pause-meter").start()
    sys.argv = [module] + args
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
