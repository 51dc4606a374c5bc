"""The processes a benchmark starts: where they run, and ending them whatever happened in between."""
from __future__ import annotations

import os
import subprocess


def stop_server(server: subprocess.Popen, timeout: float = 30) -> None:
    """The benchmark servers exit when their stdin closes; one that does not is killed."""
    if server.stdin is not None:
        server.stdin.close()
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def kill_if_running(proc: subprocess.Popen) -> None:
    """A load client still running after its measurement failed: end it and reap it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def callgrind_instructions(argv: list[str], env: dict | None = None, cwd=None,
                           timeout: float = 900) -> int:
    """Instructions callgrind counts for a run of ``argv`` (its "Collected" line); RuntimeError
    with the run's last line of stderr when it fails."""
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    for line in proc.stderr.splitlines():
        if proc.returncode == 0 and "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    raise RuntimeError(f"callgrind run of {' '.join(argv[-3:])} failed: "
                       f"{proc.stderr.strip().splitlines()[-1:]}")


def two_cores() -> tuple[int, int] | None:
    """Two cores to pin on (the measured process's, its load's or observer's), or None when
    this process may run on fewer."""
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else None


def pinned_to(cpu: int | None):
    """A preexec_fn: the child and every thread it will start run on ``cpu`` only (set before
    exec, so no thread is ever created elsewhere). None: no preexec_fn."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})
