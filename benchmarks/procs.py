"""Ending the server and client processes a benchmark started, whatever happened in between."""
from __future__ import annotations

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
