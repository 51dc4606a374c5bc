"""`coroscope top` in a real terminal (tmux) against the demo-like service, screen checked.

A terminal cannot be waited on by event, so this test polls tmux's captured screen, bounded by
a deadline; the dashboard refreshes every 0.2 s here.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time

import pytest

from ..capabilities import require
from .test_dashboard_live import ROOT, start_target, stop


# The test's own tmux server (-S, a socket in its temporary directory): the user's server and
# its sessions are left alone, and no /tmp/tmux-UID socket is left behind.
SOCKET: list[str] = []


def tmux(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", "-S", SOCKET[0], *args], capture_output=True, text=True,
                          timeout=10)


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session).stdout


def wait_for(session: str, predicate, what: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = screen(session)
        if predicate(text):
            return text
        time.sleep(0.1)
    raise AssertionError(f"the screen never showed {what}; last screen:\n{text}")


@pytest.fixture
def tmux_server(tmp_path):
    SOCKET[:] = [str(tmp_path / "tmux.sock")]
    yield
    tmux("kill-server")


@pytest.fixture
def service():
    proc = start_target("runtime", "--serve", "--requests", "5000")
    yield proc
    stop(proc)


def test_top_in_tmux_shows_the_service(tmux_server, service):
    require("tmux")
    session = f"coroscope-top-test-{os.getpid()}"
    # COLUMNS/LINES (set under pytest) would override the terminal's own size in Textual
    cmd = (f"cd {shlex.quote(str(ROOT))} && unset COLUMNS LINES && PYTHONPATH={shlex.quote(str(ROOT))} "
           f"{shlex.quote(sys.executable)} -m diag.cli top {service.pid} --refresh 0.2; "
           f"echo TOP-EXITED-$?; sleep 5")
    assert tmux("new-session", "-d", "-s", session, "-x", "140", "-y", "45", cmd).returncode == 0
    try:
        # tmux may size new windows by its own defaults: fix ours
        tmux("set-option", "-t", session, "window-size", "manual")
        tmux("resize-window", "-t", session, "-x", "140", "-y", "45")
        text = wait_for(session, lambda s: "worker-1" in s and "load-client" in s and "? help" in s,
                        "the task table")
        assert f"pid {service.pid}" in text
        assert len(re.findall(r"\bworker-[12]\b", text)) == 2    # the names given to create_task
        assert re.search(r"Task-\d+ main", text)                  # a default name, with its coroutine
        assert "loop: runtime" in text and "? help" in text   # status line; footer names help

        tmux("send-keys", "-t", session, "3")
        text = wait_for(session, lambda s: re.search(r"requests ended [1-9]\d*", s) is not None,
                        "requests being counted")
        assert re.search(r"requests/s\s+\d+\.\d req/s", text)

        tmux("send-keys", "-t", session, "?")
        wait_for(session, lambda s: "coroscope top: keys" in s and "pause/resume" in s, "the help")
        tmux("send-keys", "-t", session, "Escape")
        wait_for(session, lambda s: "coroscope top: keys" not in s, "the help closing")

        tmux("send-keys", "-t", session, "q")
        wait_for(session, lambda s: "TOP-EXITED-0" in s, "a clean exit")
    finally:
        tmux("kill-session", "-t", session)
