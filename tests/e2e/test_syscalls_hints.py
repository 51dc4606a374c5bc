"""Each hint of ``coroscope syscalls`` on real programs, counted with eBPF: named where the
program shows its pattern, silent where it does not.

The programs are the one echo server written three ways (examples/sock_server.py): with
``loop.sock_recv`` / ``loop.sock_sendall`` (re-registration), with a reader that reads until
EAGAIN (an EAGAIN storm without re-registration) and with a Protocol (neither). The
re-registration case runs at full rate too, where how many reads block depends on timing, and
must be named there as well as when the client paces itself.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.capabilities import require, run

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def _hints(tmp_path, *args) -> tuple[dict, dict[str, str]]:
    require("bcc")
    out = tmp_path / "r.json"
    r = run([PY, "-m", "diag.cli", "syscalls", "--loop", "asyncio", "--json", str(out), "--",
             PY, "examples/sock_server.py", "--seconds", "1", *args], timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert rep["requests"] > 200, rep["notes"]
    return rep, {h["pattern"]: h["message"] for h in rep["hints"]}


def _calls(rep, name: str) -> int:
    return next((n["steady_calls"] for n in rep["names"] if n["name"] == name), 0)


@pytest.mark.parametrize("load", [["--think-ms", "1"], ["--connections", "8"]], ids=["paced", "full-rate"])
def test_re_registration_is_named_on_a_sock_recv_server(tmp_path, load):
    rep, hints = _hints(tmp_path, "--style", "sock", *load)
    message = hints["re-registration"]
    per_request = _calls(rep, "epoll_ctl") / rep["requests"]
    assert message.startswith(f"{per_request:.2f} epoll_ctl per request ({_calls(rep, 'epoll_ctl')} over")
    assert "loop.sock_recv / loop.sock_sendall" in message and "Protocol" in message
    if load[0] == "--think-ms":         # every read after a reply blocks: ADD + DEL each time
        assert per_request >= 1.9, message
        assert "eagain-storm" in hints


def test_eagain_storm_is_named_on_a_reader_that_reads_until_eagain(tmp_path):
    rep, hints = _hints(tmp_path, "--style", "drain", "--think-ms", "1")
    message = hints["eagain-storm"]
    assert message.split("%")[0].isdigit() and int(message.split("%")[0]) >= 45, message
    assert "reads are tried before the fd is ready" in message
    assert "re-registration" not in hints          # its reader is registered once per connection


def test_a_protocol_server_gets_neither_hint(tmp_path):
    for load in (["--think-ms", "1"], ["--connections", "8"]):
        rep, hints = _hints(tmp_path, "--style", "protocol", *load)
        assert not {"re-registration", "eagain-storm", "getpid-per-get-running-loop"} & set(hints), hints
        assert _calls(rep, "epoll_ctl") / rep["requests"] < 0.05


def test_getpid_per_get_running_loop_is_named_on_3_11_only_when_requests_ask_for_the_loop(tmp_path):
    rep, hints = _hints(tmp_path, "--style", "protocol", "--think-ms", "1", "--get-running-loop", "2")
    assert rep["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    if rep["python"] != "3.11":
        assert "getpid-per-get-running-loop" not in hints, hints     # 3.12+: no getpid there
        return
    assert rep["per_request"]["by_name"]["getpid"]["mean"] == 2          # exactly the two asked for
    message = hints["getpid-per-get-running-loop"]
    steady = _calls(rep, "getpid")                 # and the loop's few at start-up
    assert message.startswith(f"{steady / rep['requests']:.2f} getpid per request ({steady} over")
    assert "asyncio.get_running_loop()" in message and "CPython 3.12 or later" in message
