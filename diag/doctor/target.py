"""Starting a service for doctor and check, finding its port, and stopping it.

The target runs with ``diag.bootstrap.target_environment`` so the lead's sitecustomize turns on
what was asked for (the loop, tracepoints, fd tracking). We learn the address from the line
``listening on HOST:PORT`` the service prints (the example service does; ``--url`` skips the
wait for services that print nothing). Stopping is SIGTERM, then SIGKILL after a grace period;
what the service printed is kept for the report.
"""
from __future__ import annotations

import re
import selectors
import signal
import subprocess
import sys
import threading
import time

from diag.errors import CoroscopeError, TargetGone

_LISTENING = re.compile(r"listening on (?:https?://)?([\w.\-\[\]:]+?):(\d+)")


def expand_command(command: list[str], variables: dict[str, str] | None = None) -> list[str]:
    """``{python}`` is this interpreter; other ``{name}`` come from ``variables``."""
    values = {"python": sys.executable, **(variables or {})}
    out = []
    for part in command:
        try:
            out.append(part.format(**values))
        except KeyError as exc:
            raise CoroscopeError(f"unknown placeholder {exc} in command {' '.join(command)}") from None
    return out


class Target:
    """A service process started by coroscope."""

    def __init__(self, command: list[str], *, loop: str | None = None, trace: bool = False,
                 fdtrack: bool = False, env_extra: dict[str, str] | None = None,
                 startup_timeout: float = 20.0):
        from diag.bootstrap import target_environment
        if not command:
            raise CoroscopeError("no command to run")
        env = target_environment(loop=loop, trace=trace, fdtrack=fdtrack)
        env.update(env_extra or {})
        env["PYTHONUNBUFFERED"] = "1"
        self.command = command
        self.loop = loop
        self.output: list[str] = []  # what the target printed (stdout and stderr merged)
        try:
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, text=True, bufsize=1)
        except OSError as exc:
            raise CoroscopeError(f"cannot start {command[0]}: {exc.strerror}") from None
        self.pid = self.proc.pid
        self.host, self.port = self._wait_for_address(startup_timeout)
        # Keep draining what the service prints: a full pipe would block it mid-measurement.
        self._drain = threading.Thread(target=self._drain_output, daemon=True,
                                       name="coroscope-target-output")
        self._drain.start()

    def _drain_output(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    def _wait_for_address(self, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    break
                line = self.proc.stdout.readline()
                if not line:
                    self.proc.wait()
                    tail = " | ".join(l.strip() for l in self.output[-3:])
                    raise TargetGone(f"the service exited with status {self.proc.returncode} before "
                                     f"listening{': ' + tail if tail else ''}")
                self.output.append(line)
                match = _LISTENING.search(line)
                if match:
                    return match.group(1), int(match.group(2))
        self.stop()
        raise CoroscopeError(f"the service printed no 'listening on HOST:PORT' line within {timeout:g} s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL; returns the exit status. Keeps the rest of what it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        drain = getattr(self, "_drain", None)
        if drain is not None:
            drain.join(timeout=2)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def raise_nofile_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE toward ``wanted`` (children inherit it)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft
