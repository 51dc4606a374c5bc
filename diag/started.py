"""A command coroscope started (``coroscope syscalls -- CMD``, ``coroscope flame -- CMD``): where
its output goes and how it is asked to end.

Its output is not the report. Written to the terminal, a traceback or a server's access log
lands in the middle of the table; sent to a pipe, it blocks the target once the pipe's 64 KiB
are full and nobody reads them, which changes what is measured. So stdout and stderr go to one
file, created with O_TMPFILE (``tempfile.TemporaryFile``): mode 0600 and never linked into a
directory, so no other user can open it and nothing is left behind however coroscope ends.
Only when the command fails on its own are its last lines shown, since then they say why.

Ending it: SIGINT first, because that is what Ctrl-C sends and what Python programs end on
cleanly (finally blocks, atexit, a sampler's last flush); SIGTERM next, what supervisors send
and servers handle; SIGKILL last. Each gets a grace period (``STOP_SIGNALS``). The command runs
in a session of its own, so a Ctrl-C at the terminal reaches coroscope alone (which then ends
the window and the command, in this order) and whatever the command started is killed with it.
Being asked to end is not a failure: a traceback from the SIGINT stays in the file.
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from typing import Callable

# signal, seconds to wait for the command to exit after it
STOP_SIGNALS = ((signal.SIGINT, 3.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0))
TAIL_LINES = 15
_TAIL_BYTES = 64 * 1024


class Output:
    """The command's stdout and stderr: a private, unnamed file (pass ``fileno()`` to Popen)."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="coroscope-output-")

    def fileno(self) -> int:
        return self.file.fileno()

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        """Its last ``n`` non-empty lines."""
        size = os.fstat(self.file.fileno()).st_size
        data = os.pread(self.file.fileno(), _TAIL_BYTES, max(0, size - _TAIL_BYTES))
        lines = [line.rstrip() for line in data.decode("utf-8", "replace").splitlines()]
        return [line for line in lines if line.strip()][-n:]

    def close(self) -> None:
        self.file.close()


def failure_note(what: str, status: int | None, lines: list[str] | None, after_s: float | None = None) -> str:
    """One note for a command that ended on its own with a failure, with its last lines (none
    given: the first line alone)."""
    how = (f"was killed by signal {-status} ({signal.Signals(-status).name})"
           if status is not None and status < 0 else f"exited with status {status}")
    when = f" after {after_s:.1f} s" if after_s is not None else ""
    if lines is None:
        return f"{what} {how}{when}"
    shown = ("; its last lines:\n" + "\n".join(f"  | {line}" for line in lines)) if lines else \
        " and printed nothing"
    return f"{what} {how}{when}{shown}"


def failed(status: int | None) -> bool:
    return status is not None and status != 0


def stop(send: Callable[[int], None], wait: Callable[[float], bool],
         signals=STOP_SIGNALS) -> int | None:
    """Ask a process to end, signal after signal, each with its grace; returns the last signal
    sent (None: it had ended before any). ``send(sig)`` signals it, ``wait(seconds)`` is True
    once it has exited."""
    took = None
    for sig, grace in signals:
        if wait(0):
            return took
        try:
            send(sig)
        except ProcessLookupError:
            return took
        took = sig
        if wait(grace):
            return took
    return took


def stop_process(proc: subprocess.Popen, signals=STOP_SIGNALS) -> int | None:
    """``stop`` for a child we hold, then SIGKILL to its session (what it started goes too)."""
    def wait(seconds: float) -> bool:
        try:
            proc.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    took = stop(proc.send_signal, wait, signals)
    kill_session(proc.pid)
    return took


def stop_pid(pid: int, gone: Callable[[], bool], signals=STOP_SIGNALS) -> int | None:
    """``stop`` for a process that is not our child (strace's): ``gone()`` says it has ended."""
    def wait(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not gone():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    took = stop(lambda sig: os.kill(pid, sig), wait, signals)
    kill_session(pid)
    return took


def kill_session(leader: int) -> None:
    """What is left of a session we started (its leader's pid is the session's id)."""
    try:
        if os.getsid(leader) != leader:
            return
    except (ProcessLookupError, PermissionError):
        pass          # the leader is gone: its session id is still its pid
    try:
        os.killpg(leader, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
