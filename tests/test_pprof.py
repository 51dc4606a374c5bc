"""pprof encoding: the generated module is what protoc makes, profiles survive the round trip
through the schema, and files that are not pprof say so in one line."""
from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from diag.flame import formats, pprof, profile_pb2
from diag.flame.fold import profile_from_collapsed
from diag.model.flame import FlameProfile, StackCount
from tests.capabilities import PPROF_PROTO, require, run

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_module_is_what_protoc_generates(tmp_path):
    require("pprof-proto")
    proto_dir = str(Path(PPROF_PROTO).parent)
    subprocess.run(["protoc", f"--proto_path={proto_dir}", f"--python_out={tmp_path}",
                    "profile.proto"], check=True)
    generated = (tmp_path / "profile_pb2.py").read_text()
    committed = (ROOT / "diag" / "flame" / "profile_pb2.py").read_text()
    body = committed[committed.index("# -*- coding: utf-8 -*-"):]
    assert body == generated


def _profile(**kw) -> FlameProfile:
    stacks = [
        StackCount(["main (/app/m.py:1)", "[event loop]", "f (/app/m.py:10)"], 70.0,
                   {"task": "worker", "request": "17"}),
        StackCount(["main (/app/m.py:1)", "[event loop]", "g (/app/m.py:20)"], 20.0,
                   {"task": "worker"}),
        StackCount(["main (/app/m.py:1)"], 10.0, {"thread": "MainThread"}),
    ]
    return FlameProfile(mode=kw.pop("mode", "cpu"), backend="sampler",
                        unit=kw.pop("unit", "samples"), stacks=stacks, rate_hz=100.0,
                        duration_s=1.5, target="pid 1", **kw)


def test_samples_are_leaf_first_with_labels_and_two_values():
    msg = profile_pb2.Profile()
    msg.ParseFromString(gzip.decompress(pprof.encode(_profile(mode="wall"))))
    st = msg.string_table
    assert st[0] == ""
    assert [(st[v.type], st[v.unit]) for v in msg.sample_type] == [("samples", "count"),
                                                                  ("wall", "nanoseconds")]
    assert msg.period == 10_000_000 and st[msg.period_type.type] == "wall"
    assert msg.duration_nanos == 1_500_000_000
    names = {f.id: st[f.name] for f in msg.function}
    first = msg.sample[0]
    assert [names[i] for i in first.location_id] == ["f", "[event loop]", "main"]
    assert list(first.value) == [70, 700_000_000]
    assert {st[lab.key]: st[lab.str] for lab in first.label} == {"task": "worker", "request": "17"}
    assert len(msg.function) == 4 == len(msg.location)      # one per distinct frame


def test_cpu_microseconds_become_nanoseconds():
    msg = pprof.decode(pprof.encode(_profile(unit="microseconds")))
    assert [(msg.string_table[v.type], msg.string_table[v.unit]) for v in msg.sample_type] == [
        ("cpu", "nanoseconds")]
    assert [s.value[0] for s in msg.sample] == [70_000, 20_000, 10_000]


def test_round_trip_keeps_frames_weights_and_labels():
    original = _profile(unit="microseconds")
    back = pprof.to_profile(pprof.encode(original))
    assert [(s.frames, s.weight / 1000, s.labels) for s in back.stacks] == [
        (s.frames, s.weight, s.labels) for s in original.stacks]
    assert back.duration_s == 1.5


def test_flame_diff_reads_pprof(tmp_path):
    base, new = _profile(), _profile()
    new.stacks[1].weight = 60.0                       # g grew
    (tmp_path / "a.pb.gz").write_bytes(pprof.encode(base))
    (tmp_path / "b.pb.gz").write_bytes(pprof.encode(new))
    r = run([sys.executable, "-m", "diag.cli", "flame", "diff", "a.pb.gz", "b.pb.gz", "-o",
             "d.json", "--threshold", "10"], cwd=tmp_path)
    assert r.returncode == 1, r.stderr                 # g grew by more than 10 points
    assert "FAIL" in r.stdout and "g (/app/m.py)" in r.stdout


def test_stacks_read_from_pprof_equal_the_collapsed_ones(tmp_path):
    path = tmp_path / "p.pb.gz"
    path.write_bytes(pprof.encode(_profile()))
    stacks = formats.read_stacks(str(path))
    # the value read is the time the samples stand for: 10 ms each at 100 Hz
    assert stacks == {tuple(s.frames): s.weight * 10_000_000 for s in _profile().stacks}


@pytest.mark.parametrize("data, message", [
    (b"\x1f\x8bnot really gzip", "corrupt gzip"),
    (gzip.compress(b"\xff\xff\xff\xff not protobuf"), "not a pprof profile"),
])
def test_a_file_that_is_not_pprof_is_one_line(tmp_path, data, message):
    (tmp_path / "bad.pb.gz").write_bytes(data)
    (tmp_path / "good.pb.gz").write_bytes(pprof.encode(_profile()))
    r = run([sys.executable, "-m", "diag.cli", "flame", "diff", "bad.pb.gz", "good.pb.gz"],
            cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_pyspy_thread_frames_become_thread_labels():
    profile = profile_from_collapsed({
        ("thread (4242): MainThread", "main (/a.py:1)", "f (/a.py:2)"): 3.0,
        ("thread (4243)", "worker (/a.py:9)"): 2.0,
        ("thread (4242)", "main (/a.py:1)", "g (/a.py:3)"): 1.0,    # py-spy missed the name
    }, "cpu", "py-spy")
    got = {tuple(s.frames): s.labels for s in profile.stacks}
    assert got == {("main (/a.py:1)", "f (/a.py:2)"): {"thread": "MainThread"},
                   ("main (/a.py:1)", "g (/a.py:3)"): {"thread": "MainThread"},
                   ("worker (/a.py:9)",): {"thread": "4243"}}
