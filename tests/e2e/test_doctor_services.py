"""`coroscope doctor -- CMD` on real services as their users start them, and on services that
fail in the ways real ones do. No app prints a "listening on" line: doctor finds the port from
the sockets the service's process tree holds."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from ..capabilities import require
from .web_services import APPS, command, free_port

DOCTOR = [sys.executable, "-m", "diag.cli", "doctor"]


def doctor(cmd: list[str], tmp_path, *options: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, dict | None]:
    out = tmp_path / "report.json"
    proc = subprocess.run([*DOCTOR, "--json", str(out), "-o", str(tmp_path / "report.html"),
                           *options, "--", *cmd], cwd=APPS, capture_output=True, text=True,
                          timeout=timeout)
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "aiohttp", "gunicorn"])
def test_doctor_counts_a_handlers_own_syscall_exactly_once_per_request(server, tmp_path):
    require("bcc")
    proc, report = doctor(command(server, free_port()), tmp_path, "--duration", "1",
                          "--path", "/items/7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = report["runs"]
    assert run["complete"], run["notes"]
    # every handler makes one getppid, which no server makes: counted over the service's
    # processes (a pre-fork master's workers) on one warm connection
    assert run["syscalls_per_request"]["getppid"] == 1.0, run["syscalls_per_request"]
    assert "getppid" in proc.stdout
    if server == "gunicorn":
        assert any("serves through worker processes" in n for n in run["notes"]), run["notes"]


@pytest.mark.version_independent      # doctor's handling of a failing service
def test_a_service_that_never_listens_is_named_with_its_last_lines(tmp_path):
    token = f"--run={tmp_path.name}"          # names this run's service alone on a shared machine
    proc, report = doctor([sys.executable, "never_listens.py", token], tmp_path, "--startup-timeout", "2")
    assert proc.returncode != 0
    line = last_line(proc)
    assert line.startswith("coroscope: error:") and "did not listen" in line and "2 s" in line, line
    assert "loading the model" in line
    assert not any(p.info["cmdline"] and token in p.info["cmdline"]
                   for p in psutil.process_iter(["cmdline"])), "the service was left running"


@pytest.mark.version_independent      # doctor's handling of a failing service
def test_a_service_that_exits_at_once_gives_its_exit_status(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('config file missing'); sys.exit(3)"]
    proc, _ = doctor(cmd, tmp_path)
    assert proc.returncode != 0
    line = last_line(proc)
    assert "exited with status 3" in line and "config file missing" in line, line


@pytest.mark.version_independent      # doctor's handling of a failing service
def test_a_port_already_taken_is_said_as_such(tmp_path):
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc, _ = doctor(command("uvicorn", port), tmp_path)
    assert proc.returncode != 0
    line = last_line(proc)
    assert "already in use" in line, line


@pytest.mark.version_independent          # doctor's counting of answers
@pytest.mark.parametrize("path, status", [("/missing/7", "404"), ("/fail/7", "500")])
def test_a_path_that_answers_an_error_is_counted_as_errors_not_a_crash(path, status, tmp_path):
    proc, report = doctor(command("uvicorn", free_port()), tmp_path, "--duration", "1",
                          "--path", path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = report["runs"]
    errors = [n for n in run["notes"] if n.startswith("errors in the exact-syscalls phase")]
    assert errors and f"200 answered {status}" in errors[0], run["notes"]
    assert run["latency"]["errors"] > 0


@pytest.mark.version_independent      # doctor's handling of a failing service
def test_the_gunicorn_master_killed_mid_run_keeps_what_was_gathered(tmp_path):
    port = free_port()
    out = tmp_path / "report.json"
    proc = subprocess.Popen([*DOCTOR, "--json", str(out), "-o", str(tmp_path / "report.html"),
                             "--duration", "8", "--path", "/items/7", "--",
                             *command("gunicorn", port)],
                            cwd=APPS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "s of load" not in line:          # the exact phase and the leak cycles are done
            line = proc.stderr.readline()
            assert line, f"doctor ended early: {proc.stdout.read()}"
        master = next(c for c in psutil.Process(proc.pid).children()
                      if "gunicorn" in " ".join(c.cmdline()))
        os.kill(master.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    final = stderr.strip().splitlines()[-1]
    assert final.startswith("coroscope: error:") and "what was gathered" in final, final
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert not run["complete"]
    assert run["syscalls_per_request"] is not None or not os.geteuid() == 0
    assert (tmp_path / "report.html").exists()
    deadline = time.monotonic() + 10            # no worker outlives the run
    while time.monotonic() < deadline and any(
            f"127.0.0.1:{port}" in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])):
        time.sleep(0.1)
    assert not any(f"127.0.0.1:{port}" in " ".join(p.info["cmdline"] or [])
                   for p in psutil.process_iter(["cmdline"]))


def test_doctor_on_a_running_service_measures_what_it_can_from_outside(tmp_path):
    require("bcc")
    from .web_services import Service
    service = Service("uvicorn")
    try:
        service.wait_listening()
        service.get(["/items/1"])
        out = tmp_path / "report.json"
        proc = subprocess.run([*DOCTOR, "--pid", str(service.pid), "--duration", "2", "--path",
                               "/items/7", "--json", str(out), "-o", str(tmp_path / "r.html")],
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (run,) = json.loads(out.read_text())["runs"]
        # by request, from the probe: the service's own traffic would not blur it
        assert run["syscalls_per_request"]["getppid"] == 1.0, run["syscalls_per_request"]
        assert run["latency"]["requests"] > 0
        assert "not measured from outside:" in proc.stdout
        assert any("leaked per cycle: not measured" in n for n in run["notes"])
        assert any("await flame graph: not available" in n for n in run["notes"])
        assert service.proc.poll() is None, "the service must survive its diagnosis"
    finally:
        service.stop()
