"""What this machine can do, for tests that need root, bcc, gdb, py-spy, wrk, Chromium,
Prometheus or go tool pprof.

A test that needs a capability calls ``require("bcc")``: without it the test skips with the
reason, except under ``CI=true``, where a missing capability is a failure (CI machines have
them all, so a skip there would hide a broken install step).
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
PPROF_PROTO = "/usr/share/gocode/src/github.com/google/pprof/proto/profile.proto"


@functools.cache
def _check(name: str) -> str | None:
    """None when the capability is there, else why not."""
    if name == "root":
        return None if os.geteuid() == 0 else "needs root"
    if name == "bcc":
        if os.geteuid() != 0:
            return "bcc needs root"
        try:
            import bcc  # noqa: F401
        except Exception as exc:  # ImportError, or libbcc missing
            return f"bcc is not importable: {exc}"
        if not os.path.exists(f"/lib/modules/{os.uname().release}/build"):
            return "no kernel headers for bcc (run make setup as root)"
        if not os.path.exists("/sys/kernel/tracing/events/raw_syscalls"):
            return "tracefs is not mounted"
        return None
    if name == "gdb":
        return None if shutil.which("gdb") else "gdb is not installed"
    if name == "gcore":
        return None if shutil.which("gcore") else "gcore is not installed"
    if name == "py-spy":
        exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        return None if os.path.exists(exe) else "py-spy is not installed"
    if name == "wrk":
        return None if shutil.which("wrk") else "wrk is not installed"
    if name == "tmux":
        return None if shutil.which("tmux") else "tmux is not installed"
    if name == "strace":
        return None if shutil.which("strace") else "strace is not installed"
    if name == "objcopy":
        return None if shutil.which("objcopy") else "objcopy (binutils) is not installed"
    if name == "prometheus":
        return None if shutil.which("prometheus") else "prometheus is not installed (make setup)"
    if name == "go":
        return None if shutil.which("go") else "go (golang-go, for go tool pprof) is not installed"
    if name == "pprof-proto":
        if not shutil.which("protoc"):
            return "protoc (protobuf-compiler) is not installed"
        if not os.path.exists(PPROF_PROTO):
            return f"{PPROF_PROTO} (golang-github-google-pprof-dev) is not installed"
        return None
    if name == "chromium":
        return None if shutil.which("chromium") else "chromium is not installed"
    if name == "ptrace":
        try:
            with open("/proc/sys/kernel/yama/ptrace_scope") as f:
                scope = int(f.read())
        except OSError:
            scope = 0
        return None if os.geteuid() == 0 or scope == 0 else "ptrace is restricted"
    raise ValueError(f"unknown capability {name!r}")


def have(name: str) -> bool:
    return _check(name) is None


def require(*names: str) -> None:
    """Skip the calling test when a capability is missing; fail instead under CI=true."""
    for name in names:
        reason = _check(name)
        if reason is not None:
            unavailable(reason)


def unavailable(reason: str) -> None:
    """What a test needs is not here: skip with the reason, or fail under CI=true."""
    if IN_CI:
        pytest.fail(f"CI=true and a required capability is missing: {reason}")
    pytest.skip(reason)


def run(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with text output captured and a timeout, for tests."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
