"""pprof files of real profiles, read back by an independent reader: Go's own ``go tool pprof``
(Debian's golang-go), whose ``-raw`` listing is parsed here. The known-shares program says
what the truth is; the profile's shares must be within 5 points of it, with its labels."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.capabilities import require, run

PY = sys.executable
_SAMPLE = re.compile(r"^\s*(\d+(?:\s+\d+)*): ((?:\d+ ?)*)$")
_LABEL = re.compile(r"(\w+):\[([^\]]*)\]")
_LOCATION = re.compile(r"^\s*(\d+): 0x[0-9a-f]+ (?:M=\d+ )?(.+?) (/\S*|<[^>]*>|):(\d+) s=\d+")


def go_pprof_raw(path: Path) -> list[tuple[list[str], dict[str, str], list[int]]]:
    """(function names root first, labels, values) per sample, as go tool pprof -raw lists them."""
    out = subprocess.run(["go", "tool", "pprof", "-raw", str(path)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    samples, names, section = [], {}, None
    for line in out.splitlines():
        if line.rstrip() in ("Samples:", "Locations", "Mappings"):
            section = line.strip()
            continue
        if section == "Samples:":
            m = _SAMPLE.match(line)
            if m:
                samples.append(([int(i) for i in m.group(2).split()], {},
                                [int(v) for v in m.group(1).split()]))
            elif samples and _LABEL.search(line):
                samples[-1][1].update(_LABEL.findall(line))
        elif section == "Locations":
            m = _LOCATION.match(line)
            if m:
                names[int(m.group(1))] = m.group(2)
    return [([names[i] for i in reversed(ids)], labels, values) for ids, labels, values in samples]


def _profile(tmp_path, *flame_args, duration=3):
    out, truth = tmp_path / "p.pb.gz", tmp_path / "truth.json"
    r = run([PY, "-m", "diag.cli", "flame", "-o", str(out), *flame_args, "--", PY, "-m",
             "examples.known_shares", "--duration", str(duration), "--truth", str(truth)],
            timeout=90, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "(pprof)" in r.stdout
    return go_pprof_raw(out), json.loads(truth.read_text())["shares"]


def _share(samples, func, within=None) -> float:
    chosen = [s for s in samples if within is None or within in s[0]]
    total = sum(s[2][-1] for s in chosen)
    return sum(s[2][-1] for s in chosen if func in s[0]) / total


def test_cpu_profile_read_by_go_tool_pprof_has_the_true_shares_and_task_labels(tmp_path):
    require("go")
    samples, truth = _profile(tmp_path, "--backend", "sampler", "--rate", "250")
    for func in ("f", "g"):
        # the truth is measured inside asyncio.run, the profile also saw the imports
        share = _share(samples, func, within="[event loop]")
        assert abs(share - truth[func]) < 0.05, (func, share, truth[func])
    in_f = [s for s in samples if "f" in s[0]]
    assert in_f and all(s[1].get("task") == "cpu_worker" for s in in_f)


def test_await_profile_has_the_true_shares_per_task(tmp_path):
    require("go")
    samples, truth = _profile(tmp_path, "--mode", "await")
    of_h = [s for s in samples if s[1].get("task") == "h"]
    assert of_h
    total = sum(s[2][-1] for s in of_h)
    other = sum(s[2][-1] for s in of_h if "other_wait" in s[0]) / total
    assert abs(other - truth["h_other"]) < 0.05, (other, truth)
    assert {s[1].get("task") for s in samples} >= {"h", "cpu_worker"}


def test_pyspy_profile_carries_the_thread_label(tmp_path):
    require("go", "py-spy", "ptrace")
    samples, _truth = _profile(tmp_path, "--rate", "100", duration=2)
    in_f = [s for s in samples if "f" in s[0]]
    assert in_f and {s[1].get("thread") for s in in_f} == {"MainThread"}
    assert not any(name.startswith("thread (") for s in samples for name in s[0])
