"""The runtime's public surface: run/install/policy, the tracepoints it calls, the launchers."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runtime
from runtime import tracing
from runtime.tracing import TRACE

ROOT = Path(__file__).resolve().parent.parent
APP = textwrap.dedent("""
    import asyncio, sys
    async def main():
        loop = asyncio.get_running_loop()
        print(type(loop).__module__ + "." + type(loop).__name__, sys.argv[1:])
    asyncio.run(main())
""")


def test_run_uses_a_runtime_loop_and_returns_the_result():
    async def main():
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop())

    assert runtime.run(main()) is runtime.Loop


def test_run_debug_mode_reports_slow_callbacks(caplog):
    async def main():
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.001
        import time
        time.sleep(0.01)  # a blocking step: what debug mode exists to catch
        return loop.get_debug()

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        assert runtime.run(main(), debug=True) is True
    assert any("took" in record.getMessage() for record in caplog.records)


def test_install_makes_asyncio_run_use_the_runtime():
    try:
        runtime.install()
        loop = asyncio.new_event_loop()
        assert isinstance(loop, runtime.Loop)
        loop.close()
    finally:
        asyncio.set_event_loop_policy(None)


@pytest.mark.parametrize("value,expected", [("runtime", "Loop"), ("uvloop", "Loop"), ("", "_UnixSelectorEventLoop"),
                                            ("asyncio", "_UnixSelectorEventLoop")])
def test_install_from_env(monkeypatch, value, expected):
    monkeypatch.setenv("COROSCOPE_LOOP", value)
    try:
        runtime.install_from_env()
        loop = asyncio.new_event_loop()
        assert type(loop).__name__ == expected
        assert (type(loop).__module__ == "uvloop") == (value == "uvloop")
        loop.close()
    finally:
        asyncio.set_event_loop_policy(None)


def test_install_from_env_with_a_wrong_value_says_so_and_changes_nothing(monkeypatch, capsys):
    monkeypatch.setenv("COROSCOPE_LOOP", "tokio")
    before = asyncio.get_event_loop_policy()
    runtime.install_from_env()
    assert "COROSCOPE_LOOP='tokio'" in capsys.readouterr().err
    assert asyncio.get_event_loop_policy() is before


def test_request_is_exported():
    assert runtime.request is not None


def test_signal_handlers_and_subprocesses():
    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.set_result, "usr1")
        os.kill(os.getpid(), signal.SIGUSR1)
        assert await asyncio.wait_for(got, 5) == "usr1"
        assert loop.remove_signal_handler(signal.SIGUSR1)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        out, _ = await proc.communicate(b"echo")
        return out, proc.returncode

    assert runtime.run(main()) == (b"ECHO", 0)


class Recorder(tracing._Off):
    """Tracing on, recording every tracepoint call."""

    on = True
    calls: list = []

    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        if name in ("on", "calls") or not callable(attr):
            return attr
        def record(*args):
            Recorder.calls.append((name, args))
            return attr(*args)
        return record


def test_tracepoints_fire_where_the_contract_says():
    Recorder.calls = []
    saved = TRACE.__class__
    TRACE.__class__ = Recorder
    TRACE.__dict__["on"] = True      # TRACE.on is an instance attribute (see runtime.tracing)
    try:
        async def echo(reader, writer):
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        async def main():
            loop = asyncio.get_running_loop()
            server = await asyncio.start_server(echo, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hi")
            assert await reader.read(100) == b"hi"
            writer.close()
            await writer.wait_closed()
            timer = loop.call_later(100, print)
            timer.cancel()
            await asyncio.sleep(0.001)
            await loop.run_in_executor(None, int)
            server.close()
            await server.wait_closed()

        runtime.run(main())
    finally:
        TRACE.__dict__["on"] = False
        TRACE.__class__ = saved
    names = {name for name, _ in Recorder.calls}
    expected = {"task_create", "run_handle", "io_register", "io_unregister", "io_ready", "timer_add",
                "timer_fire", "timer_cancel", "fd_open", "fd_close", "loop_iteration",
                "executor_submit", "executor_done"}
    assert expected <= names, expected - names
    opened = [args[0] for name, args in Recorder.calls if name == "fd_open"]
    closed = [args[0] for name, args in Recorder.calls if name == "fd_close"]
    kinds = {args[1] for name, args in Recorder.calls if name == "fd_open"}
    assert {"epoll", "eventfd", "socket"} <= kinds
    assert sorted(opened) == sorted(closed)  # every fd the loop opened, it closed, and said so


def _run(cmd, **kw):
    env = dict(os.environ)
    env.pop("COROSCOPE_LOOP", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=kw.get("cwd"))


def test_python_dash_m_runtime_runs_an_unchanged_program(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    out = _run([sys.executable, "-m", "runtime", "app.py", "a", "b"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "runtime.loop.Loop ['a', 'b']"


@pytest.mark.parametrize("prefix", [["python"], []])
def test_coroscope_run(tmp_path, prefix):
    (tmp_path / "app.py").write_text(APP)
    out = _run([sys.executable, "-m", "diag.cli", "run", "--", *prefix, "app.py", "x"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "runtime.loop.Loop ['x']"


def test_coroscope_run_with_another_loop_and_the_programs_exit_status(tmp_path):
    (tmp_path / "app.py").write_text(APP + "\nraise SystemExit(3)\n")
    out = _run([sys.executable, "-m", "diag.cli", "run", "--loop", "uvloop", "--", "python", "app.py"],
               cwd=tmp_path)
    assert out.returncode == 3
    assert out.stdout.strip() == "uvloop.Loop []"


@pytest.mark.parametrize("cmd,message", [([], "nothing to run"), (["missing.py"], "no such file"),
                                         (["no-such-command-xyz"], "command not found")])
def test_coroscope_run_bad_input_is_one_line(tmp_path, cmd, message):
    out = _run([sys.executable, "-m", "diag.cli", "run", "--", *cmd], cwd=tmp_path)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coroscope: error:") and message in lines[0]


def test_run_finalizes_async_generators_and_the_default_executor():
    import threading

    finalized = []
    executor_threads = []

    async def numbers():
        try:
            yield 1
            yield 2
        finally:
            finalized.append(True)

    async def main():
        agen = numbers()
        assert await agen.__anext__() == 1  # left suspended: shutdown_asyncgens must close it
        loop = asyncio.get_running_loop()
        executor_threads.append(await loop.run_in_executor(None, threading.current_thread))

    runtime.run(main())
    assert finalized == [True]
    assert not executor_threads[0].is_alive()  # shutdown_default_executor joined it
