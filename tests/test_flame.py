"""Flame graphs without external programs: the model, folding, formats, the sampler in-process."""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import jsonschema
import pytest

from diag.flame import fold, formats
from diag.flame.awaits import await_chains, chain_of
from diag.flame.diff import path_deltas
from diag.flame.sampler import (Sampler, SamplerFileError, install_from_env, read_sampler_file,
                                sampler_path)
from diag.model.base import to_jsonable
from diag.model.flame import FlameProfile, StackCount, compare, function_of, split_frame

SCHEMA = json.loads((Path(__file__).parent / "data" / "speedscope-file-format-schema.json").read_text())
ASYNCIO = str(Path(asyncio.__file__).parent)


def _profile(stacks: dict[str, float], **kw) -> FlameProfile:
    return FlameProfile(mode=kw.pop("mode", "cpu"), backend="test", unit="samples",
                        stacks=[StackCount(k.split(";"), w) for k, w in stacks.items()], **kw)


def test_frame_labels_split_into_function_file_and_line():
    assert split_frame("f (/a/b.py:12)") == ("f", "/a/b.py", 12)
    assert split_frame("[event loop]") == ("[event loop]", None, None)
    assert function_of("f (/a/b.py:12)") == "f (/a/b.py)"


def test_shares_count_recursion_once_and_self_at_the_leaf():
    p = _profile({"main;f;f;g": 3, "main;f": 1, "main;h": 6})
    assert p.total() == 10
    assert p.inclusive_share("f") == pytest.approx(0.4)
    assert p.self_share("g") == pytest.approx(0.3)
    incl, self_w = p.function_totals()
    assert incl["f"] == 4 and self_w["f"] == 1 and self_w["h"] == 6


def test_loop_machinery_folds_into_one_frame_and_user_frames_stay_above_it():
    stack = (
        "<module> (/srv/app.py:40)",
        f"run ({ASYNCIO}/runners.py:190)",
        f"run_until_complete ({ASYNCIO}/base_events.py:640)",
        f"_run_once ({ASYNCIO}/base_events.py:1922)",
        f"_run ({ASYNCIO}/events.py:80)",
        "handler (/srv/app.py:12)",
        "query (/srv/db.py:7)",
    )
    assert fold.fold_loop_frames(stack) == (
        "<module> (/srv/app.py:40)", "[event loop]", "handler (/srv/app.py:12)", "query (/srv/db.py:7)")
    idle = stack[:4] + (f"select ({sys.prefix}/lib/python3.11/selectors.py:469)",)
    assert fold.fold_loop_frames(idle) == ("<module> (/srv/app.py:40)", "[event loop]")
    # a later asyncio frame the program called (a sleep) is the program's, not the loop's
    called = stack + (f"sleep ({ASYNCIO}/tasks.py:640)",)
    assert fold.fold_loop_frames(called)[-1] == f"sleep ({ASYNCIO}/tasks.py:640)"


def test_collapsed_round_trip_and_bad_lines():
    p = _profile({"a;b;c": 5, "a;d": 2})
    text = formats.to_collapsed(p)
    assert formats.parse_collapsed(text) == {("a", "b", "c"): 5.0, ("a", "d"): 2.0}
    with pytest.raises(formats.FormatError, match="input:2"):
        formats.parse_collapsed("a;b 3\nthis is not a stack\n")


def test_speedscope_output_validates_against_the_schema_and_reads_back():
    p = _profile({"main (/x.py:1);f (/x.py:5)": 7, "main (/x.py:1);g (/x.py:9)": 3,
                  "[task: a];h (/x.py:20)": 2}, by="task")
    doc = to_jsonable(formats.to_speedscope(p))
    jsonschema.validate(doc, SCHEMA)
    assert len(doc["profiles"]) == 1 + len(p.roots())        # one tab per root with --by
    assert formats.parse_speedscope(doc) == {tuple(s.frames): s.weight for s in p.stacks}
    broken = dict(doc, profiles=[{"type": "sampled", "samples": "nope"}])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_svg_has_one_frame_per_tree_node_with_its_share():
    p = _profile({"a;b": 3, "a;c": 1})
    svg = formats.render_svg(p)
    assert svg.count('class="f"') == 4                       # all, a, b, c
    assert 'data-name="b"' in svg and "b (3 samples, 75.00%)" in svg
    assert "http://" not in svg.replace("http://www.w3.org/2000/svg", "")   # no network


def test_diff_ranks_growth_and_colours_paths():
    base = _profile({"main;f": 50, "main;g": 50})
    new = _profile({"main;f": 80, "main;g": 20})
    d = compare(base, new, threshold_points=10)
    assert d.changes[0].function == "f" and d.changes[0].self_delta == pytest.approx(0.3)
    assert d.changes[-1].function == "g"
    assert d.failed == ["f"]
    deltas = path_deltas(base, new)
    assert deltas[("main", "f")] == pytest.approx(30) and deltas[("main", "g")] == pytest.approx(-30)
    svg = formats.render_svg(new, diff_deltas=deltas)
    assert "rgb(235,55,55)" in svg and "rgb(55,55,235)" in svg  # deepest red and blue


def _spin(stop: threading.Event):
    while not stop.is_set():
        _spin_leaf()


def _spin_leaf():
    x = 0
    for i in range(2000):
        x += i * i
    return x


def test_sampler_charges_cpu_to_the_busy_thread_and_nothing_to_a_sleeping_one(tmp_path):
    stop = threading.Event()
    busy = threading.Thread(target=_spin, args=(stop,), name="busy")
    idle = threading.Thread(target=stop.wait, name="idle")
    busy.start(), idle.start()
    s = Sampler(str(tmp_path / "s.txt"), rate=200, mode="cpu", switch_interval=None).start()
    time.sleep(1.0)
    s.stop()
    stop.set()
    busy.join(), idle.join()
    data = read_sampler_file(str(tmp_path / "s.txt"))
    assert data.final and data.samples > 5
    cpu = fold.profile_from_sampler(data, "cpu")
    assert cpu.inclusive_share("_spin_leaf") > 0.8           # the busy thread, not the waiter
    wall = fold.profile_from_sampler(data, "wall")
    assert wall.inclusive_share("wait") > 0.2                # the idle thread counts in wall mode


def test_sampler_file_parsing_rejects_corrupt_files(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("hello\n")
    with pytest.raises(SamplerFileError, match="not a coroscope sampler file"):
        read_sampler_file(str(bad))
    bad.write_text("# coroscope-sampler 1 pid=1 rate=100 mode=cpu samples=1 final=1 elapsed=1\n"
                   "thread\tonly three\tfields\n")
    with pytest.raises(SamplerFileError, match=":2: expected 6"):
        read_sampler_file(str(bad))


def test_install_from_env_does_nothing_when_unset():
    assert install_from_env({}) is None
    assert sampler_path("/tmp/s-{pid}.txt", 42) == "/tmp/s-42.txt"


def test_await_chains_walk_every_pending_task_to_its_leaf():
    labels = lambda frame: frame.f_code.co_name  # noqa: E731

    async def leaf_wait(ev):
        await ev.wait()

    async def middle(ev):
        await leaf_wait(ev)

    async def main():
        ev = asyncio.Event()
        tasks = [asyncio.create_task(middle(ev), name=f"t{i}") for i in range(3)]
        await asyncio.sleep(0)
        chains = {t.get_name(): c for t, c in await_chains(labels)}
        ev.set()
        await asyncio.gather(*tasks)
        return chains, chain_of(tasks[0].get_coro(), labels), asyncio.current_task().get_name()

    chains, finished, main_name = asyncio.run(main())
    assert finished is None
    for i in range(3):
        assert chains[f"t{i}"] == ("middle", "leaf_wait", "wait", "[future]")
    assert chains[main_name][0] == "main" and chains[main_name][-1] == "[running]"


def test_await_mode_profile_roots_by_task(tmp_path):
    async def waiter():
        await asyncio.sleep(0.5)

    async def main():
        s = Sampler(str(tmp_path / "a.txt"), rate=100, mode="await", switch_interval=None).start()
        await asyncio.gather(asyncio.create_task(waiter(), name="w1"),
                             asyncio.create_task(waiter(), name="w2"))
        s.stop()

    asyncio.run(main())
    data = read_sampler_file(str(tmp_path / "a.txt"))
    p = fold.profile_from_sampler(data, "await", by="task")
    roots = dict(p.roots())
    assert set(roots) >= {"[task: w1]", "[task: w2]"}
    w1 = p.under("[task: w1]")
    assert w1.inclusive_share("sleep") > 0.9
