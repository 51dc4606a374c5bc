"""The dashboard app driven with Textual's pilot, fed from a recording of the fixed scenario.

Snapshot tests (pytest-textual-snapshot) draw each view at 120x40 from that recording: the
screens depend on nothing but tests/test_dashboard_scenario.py. Update them after an intended
change with ``pytest tests/test_dashboard_app.py --snapshot-update`` and look at the SVGs.
"""
from __future__ import annotations

import asyncio
import functools
import os

import pytest
from textual.widgets import DataTable, Static

from dashboards.app import DashboardApp
from dashboards.views.help import HelpScreen
from dashboards.views.tasks import TasksView
from diag.live import events as ev
from diag.live import recording
from diag.live.source import LiveSource, ReplaySource

from .test_dashboard_scenario import LEAK_STACK, SECONDS, T0, S, second_events, write_recording

SIZE = (120, 40)


def sync(test):
    """Run an async test on its own event loop (the project has no pytest-asyncio)."""
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return wrapper


@pytest.fixture
def replay_file(tmp_path):
    path = tmp_path / "scenario.jsonl"
    assert write_recording(path) == SECONDS
    return path


def replay_app(path) -> DashboardApp:
    return DashboardApp(ReplaySource(path), auto_refresh=False)


def _table_rows(app) -> list[list[str]]:
    table = app.query_one("#task-table", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def _to_end(pilot, app):
    for _ in range(SECONDS):
        await pilot.press("ctrl+r")
    await pilot.pause()


@pytest.mark.parametrize("view", ["tasks", "warnings", "requests", "fds", "hot", "loop"])
def test_view_snapshot(view, replay_file, snap_compare):
    keys = {"tasks": "1", "warnings": "2", "requests": "3", "fds": "4", "hot": "5", "loop": "6"}

    async def run_before(pilot):
        await _to_end(pilot, pilot.app)
        await pilot.press(keys[view])
        await pilot.pause()

    assert snap_compare(replay_app(replay_file), terminal_size=SIZE, run_before=run_before)


def test_help_snapshot(replay_file, snap_compare):
    assert snap_compare(replay_app(replay_file), terminal_size=SIZE, press=["question_mark"])


@sync
async def test_replay_steps_pauses_and_resumes(replay_file):
    app = replay_app(replay_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.snapshot.source == f"replay 1/{SECONDS}"
        await pilot.press("p")
        app.refresh_data()                      # what the interval timer does: nothing
        assert app.snapshot.source == f"replay 1/{SECONDS}"
        assert "PAUSED" in str(app.query_one("#status", Static).render())
        await pilot.press("p")
        app.refresh_data()
        assert app.snapshot.source == f"replay 2/{SECONDS}"
        await pilot.press("right_square_bracket", "right_square_bracket", "left_square_bracket")
        assert app.snapshot.source == f"replay 3/{SECONDS}" and app.paused


@sync
async def test_tasks_sort_and_filter(replay_file):
    app = replay_app(replay_file)
    async with app.run_test(size=SIZE) as pilot:
        await _to_end(pilot, app)
        assert [r[0] for r in _table_rows(app)] == ["1", "2", "3", "4", "5", "6", "7"]
        await pilot.press("s")                  # by name
        assert [r[1] for r in _table_rows(app)] == sorted(r[1] for r in _table_rows(app))
        await pilot.press("S")                  # reversed
        names = [r[1] for r in _table_rows(app)]
        assert names == sorted(names, reverse=True)
        await pilot.press("slash", *"worker", "enter")
        await pilot.pause()
        assert sorted(r[1] for r in _table_rows(app)) == ["worker-1", "worker-2"]
        await pilot.press("p")                  # keys reach the app again after the filter
        assert app.paused
        await pilot.press("escape")
        assert len(_table_rows(app)) == 7


@sync
async def test_task_detail_follows_the_cursor(replay_file):
    app = replay_app(replay_file)
    async with app.run_test(size=SIZE) as pilot:
        await _to_end(pilot, app)
        for _ in range(5):
            await pilot.press("down")
        await pilot.pause()
        assert app.query_one(TasksView).selected_id == 6
        detail = str(app.query_one("#task-histogram", Static).render())
        assert "<1s" in detail and "1" in detail.split("<1s")[1]


@sync
async def test_fd_view_shows_the_opening_stack_of_the_selected_fd(replay_file):
    app = replay_app(replay_file)
    async with app.run_test(size=SIZE) as pilot:
        await _to_end(pilot, app)
        await pilot.press("4", *["down"] * 6)    # fds 0 1 2 3 4 9, then the first leaked one
        await pilot.pause()
        stack = str(app.query_one("#fd-stack", Static).render())
        assert stack.startswith("fd 20 (socket) opened by task 6")
        assert LEAK_STACK[0] in stack


@sync
async def test_help_lists_every_binding(replay_file):
    app = replay_app(replay_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-body", Static).render())
        for binding in app.BINDINGS:
            assert binding.description in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


class ScriptedReader:
    """An EventReader giving one second of the scenario per read (the probe's place)."""

    loop_kind = "runtime"
    missing = {"never-awaited": "not in this script"}

    def __init__(self):
        self.k = 0
        self.closed = False

    def read(self):
        events = second_events(self.k)
        self.k += 1
        return events

    def close(self):
        self.closed = True


@sync
async def test_record_then_replay_draws_the_same_tasks(tmp_path):
    out = tmp_path / "rec.jsonl"
    reader = ScriptedReader()
    clock = iter(T0 + k * S for k in range(1, 100))
    source = LiveSource(os.getpid(), reader, clock=lambda: next(clock))
    app = DashboardApp(source, auto_refresh=False, record_path=str(out))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r", "ctrl+r")
        await pilot.pause()
        assert app.recorder is not None and app.recorder.count == 3
        live_rows = _table_rows(app)
        await pilot.press("r")                  # stop: the file appears whole
        assert app.recorder is None
    assert reader.closed
    snaps = recording.load(out)
    assert len(snaps) == 3
    assert snaps[-1].missing == ["never-awaited: not in this script"]
    replay = replay_app(out)
    async with replay.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r", "ctrl+r")
        await pilot.pause()
        assert _table_rows(replay) == live_rows


@sync
async def test_target_exit_is_shown_and_the_data_kept():
    reader = ScriptedReader()
    source = LiveSource(os.getpid(), reader)
    app = DashboardApp(source, auto_refresh=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        source.pid = 2 ** 22 + 12345            # a pid no process has: "the target exited"
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert source.ended and not app.snapshot.target.alive
        status = str(app.query_one("#status", Static).render())
        assert "target exited" in status
        assert len(_table_rows(app)) == 7       # what it had is still shown
        reads = reader.k                        # (one last read drained what it wrote last)
        await pilot.press("ctrl+r")
        assert reader.k == reads and reader.closed   # a gone target is not read again


def test_recording_rejects_other_versions_and_truncation(tmp_path, replay_file):
    from diag.errors import CoroscopeError

    data = replay_file.read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[: len(data) - 50])
    with pytest.raises(CoroscopeError, match=r"is truncated at line 6 \(4 whole snapshots"):
        recording.load(cut)
    assert len(recording.load(cut, allow_truncated=True)) == 4
    other = tmp_path / "v9.jsonl"
    other.write_bytes(data.replace(b'"version": 1', b'"version": 9', 1))
    with pytest.raises(CoroscopeError, match="format version 9.*reads version 1"):
        recording.load(other)
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\n")
    with pytest.raises(CoroscopeError, match="not a coroscope top recording"):
        recording.load(junk)
    with pytest.raises(CoroscopeError, match="does not exist"):
        recording.load(tmp_path / "none.jsonl")


def test_recorder_writes_partial_then_renames(tmp_path):
    from diag.live.state import LiveState

    out = tmp_path / "r.jsonl"
    rec = recording.Recorder(out)
    state = LiveState()
    state.apply(ev.TaskCreated(1, 1, "x"))
    rec.add(state.snapshot())
    assert not out.exists() and rec.partial.exists()
    rec.close()
    assert out.exists() and not rec.partial.exists()
    (snap,) = recording.load(out)
    assert snap.tasks[0].name == "x"
