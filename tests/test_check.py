"""coroscope check without a target: config, baseline files, verdicts, Markdown and JUnit."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from diag.check.baseline import load_baseline, write_baseline
from diag.check.budgets import compare_syscalls, evaluate, evaluate_ratio
from diag.check.config import Ratio, Scenario, load_config
from diag.check.render import junit_xml, markdown
from diag.errors import CoroscopeError
from diag.model.check import CheckReport, LoopWarning, Measurement

ROOT = Path(__file__).resolve().parent.parent


def measurement(name="s", syscalls=None, fds=(7, 7, 7), warnings=(), rate=None, tasks=(3, 3, 3),
                tasks_why_not=None, survivors=()):
    fds, tasks = list(fds), [] if tasks_why_not else list(tasks)
    return Measurement(
        scenario=name, command=["python", "-m", "svc"], loop="asyncio", requests=100,
        syscalls_backend="bpf", syscalls_per_request=syscalls, cycles=len(fds),
        fds_after_cycle=fds, threads_after_cycle=[1] * len(fds),
        leaked_fds_per_cycle=(fds[-1] - fds[0]) / (len(fds) - 1), leaked_threads_per_cycle=0.0,
        warnings=list(warnings), warnings_backend="client-latency", max_latency_ms=1.0,
        requests_per_s=rate, tasks_after_cycle=tasks,
        leaked_tasks_per_cycle=None if tasks_why_not else (tasks[-1] - tasks[0]) / (len(tasks) - 1),
        tasks_not_measured=tasks_why_not, leaked_task_survivors=list(survivors))


def test_project_config_loads_and_names_its_scenarios():
    config = load_config(ROOT / "coroscope.toml")
    assert [s.name for s in config.scenarios] == ["http-asyncio", "http-uvloop", "http-runtime"]
    assert config.baseline == ROOT / "coroscope-baseline.json"
    assert config.variables["service"] == "examples.http_service"
    # every scenario is traced, so live tasks per cycle are counted (from the probe file)
    assert all(s.trace and s.leaked_tasks_per_cycle == 0 for s in config.scenarios)


def test_var_override_and_bad_configs(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[check.vars]\nservice="a"\n[[scenario]]\nname="x"\ncommand=["{service}"]\n')
    assert load_config(cfg, {"service": "b"}).variables["service"] == "b"
    cfg.write_text('[[scenario]]\nname="x"\ncommand=["a"]\n[scenario.budgets]\nwarnings=["nope"]\n')
    with pytest.raises(CoroscopeError, match="unknown warning kind"):
        load_config(cfg)
    cfg.write_text('[[scenario]]\nname="x"\ncommand=["a"]\n[[ratio]]\nname="r"\nscenario="x"\n'
                   'reference="y"\n')
    with pytest.raises(CoroscopeError, match="no scenario named 'y'"):
        load_config(cfg)
    cfg.write_text("[[scenario]\n")
    with pytest.raises(CoroscopeError, match="not valid TOML"):
        load_config(cfg)
    with pytest.raises(CoroscopeError, match="no such config"):
        load_config(tmp_path / "missing.toml")


def test_baseline_round_trip_and_corruption(tmp_path):
    path = tmp_path / "b.json"
    assert load_baseline(path) is None
    write_baseline(path, [measurement("a", {"read": 1.0, "write": 1.0})], None)
    write_baseline(path, [measurement("b", {"epoll_wait": 1.0})], load_baseline(path))
    data = load_baseline(path)
    assert data["a"]["syscalls_per_request"] == {"read": 1.0, "write": 1.0}
    assert data["b"]["syscalls_per_request"] == {"epoll_wait": 1.0}
    assert not [p for p in tmp_path.iterdir() if p.name != "b.json"]  # no temp files left
    path.write_text('{"version": 1, "scenarios": {"a": ')
    with pytest.raises(CoroscopeError, match="corrupt: not JSON"):
        load_baseline(path)
    path.write_text('{"version": 7}')
    with pytest.raises(CoroscopeError, match="corrupt"):
        load_baseline(path)


def test_syscall_comparison_is_exact_per_name():
    assert compare_syscalls({"read": 1, "write": 1}, {"read": 1.0, "write": 1.0}) == []
    diff = compare_syscalls({"read": 1, "write": 1}, {"read": 1, "write": 1, "getppid": 1})
    assert diff == ["getppid: 0 -> 1 per request (+1)"]
    assert compare_syscalls({"read": 2}, {"read": 1.5}) == ["read: 2 -> 1.5 per request (-0.5)"]


def test_evaluate_names_each_regression():
    scenario = Scenario(name="s", command=["x"])
    base = {"s": {"syscalls_per_request": {"read": 1.0}}}
    clean = evaluate(scenario, measurement(syscalls={"read": 1.0}), base)
    assert [r.status for r in clean] == ["pass"] * 5
    bad = evaluate(scenario, measurement(syscalls={"read": 1.0, "getppid": 1.0}, fds=(7, 8, 9),
                                         tasks=(3, 5, 7), survivors=["4 x watch (svc.py:9)"],
                                         warnings=[LoopWarning("blocked-loop", "200 ms", "probe")]), base)
    failed = {r.budget: r.message for r in bad if r.status == "fail"}
    assert set(failed) == {"syscalls_per_request", "leaked_fds_per_cycle", "leaked_tasks_per_cycle",
                           "warnings"}
    assert "getppid" in failed["syscalls_per_request"]
    assert "1 per cycle" in failed["leaked_fds_per_cycle"]
    assert failed["leaked_tasks_per_cycle"].startswith("tasks leaked: 2 per cycle over 3 cycles")
    assert "after each cycle: 3, 5, 7" in failed["leaked_tasks_per_cycle"]
    assert "still pending: 4 x watch (svc.py:9)" in failed["leaked_tasks_per_cycle"]
    assert "blocked-loop" in failed["warnings"]
    missing = evaluate(scenario, measurement(syscalls={"read": 1.0}), {})
    assert missing[0].status == "fail" and "--update-baseline" in missing[0].message


def test_task_budget_not_measured_says_why_and_can_be_turned_off(tmp_path):
    scenario = Scenario(name="s", command=["x"])
    why = "no probe file: pid 7 publishes no probe file"
    results = evaluate(scenario, measurement(syscalls=None, tasks_why_not=why), {})
    (tasks,) = [r for r in results if r.budget == "leaked_tasks_per_cycle"]
    assert tasks.status == "skip" and tasks.message == f"tasks per cycle not measured: {why}"
    assert "not measured (no probe file" in markdown(CheckReport("c", None, False, [measurement(
        tasks_why_not=why)], results))
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[scenario]]\nname="x"\ncommand=["a"]\n[scenario.budgets]\n'
                   'leaked_tasks_per_cycle=false\n')
    off = load_config(cfg).scenarios[0]
    assert off.leaked_tasks_per_cycle is None
    assert "leaked_tasks_per_cycle" not in {r.budget for r in evaluate(off, measurement(), {})}
    cfg.write_text(cfg.read_text().replace("leaked_tasks_per_cycle", "leaked_taskz_per_cycle"))
    with pytest.raises(CoroscopeError, match="unknown budget"):
        load_config(cfg)
    cfg.write_text('[[scenario]]\nname="x"\ncommand=["a"]\n[scenario.budgets]\n'
                   'leaked_tasks_per_cycle=2\n')
    assert load_config(cfg).scenarios[0].leaked_tasks_per_cycle == 2


def test_ratio_budget():
    ms = {"a": measurement("a", rate=900.0), "b": measurement("b", rate=1000.0)}
    assert evaluate_ratio(Ratio("r", "a", "b", min=0.8), ms).status == "pass"
    assert evaluate_ratio(Ratio("r", "a", "b", min=0.95), ms).status == "fail"


def test_markdown_and_junit_show_failures():
    scenario = Scenario(name="s", command=["x"])
    m = measurement(syscalls={"read": 1.0, "getppid": 1.0})
    results = evaluate(scenario, m, {"s": {"syscalls_per_request": {"read": 1.0}}})
    report = CheckReport("c.toml", "b.json", False, [m], results)
    md = markdown(report)
    assert "1 regression(s)" in md and "getppid" in md
    suite = ET.fromstring(junit_xml(report))
    assert suite.get("failures") == "1" and suite.get("tests") == "5"
    failure = suite.find("testcase[@name='syscalls_per_request']/failure")
    assert failure is not None and "getppid" in failure.get("message")


def test_cli_corrupt_baseline_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "diag.cli", "check", "--config",
                           str(ROOT / "coroscope.toml"), "--baseline", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("coroscope: error: baseline") and "corrupt" in proc.stderr


def test_a_service_that_will_not_start_fails_its_scenario_and_reports(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[check]\nbaseline = "b.json"\nmarkdown = "s.md"\njunit = "j.xml"\n'
                   '[[scenario]]\nname = "dies"\n'
                   'command = ["{python}", "-c", "import sys; print(\'boom\'); sys.exit(3)"]\n')
    proc = subprocess.run([sys.executable, "-m", "diag.cli", "check", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fail = [l for l in proc.stdout.splitlines() if l.startswith("FAIL")]
    assert len(fail) == 1 and "dies  service" in fail[0]
    assert "exited with status 3 before listening: boom" in fail[0]
    assert 'failures="1"' in (tmp_path / "j.xml").read_text()
    assert "dies" in (tmp_path / "s.md").read_text()


def test_update_baseline_replaces_a_corrupt_one(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[check]\nbaseline = "b.json"\nmarkdown = "s.md"\njunit = "j.xml"\n'
                   '[[scenario]]\nname = "dies"\ncommand = ["{python}", "-c", "pass"]\n')
    (tmp_path / "b.json").write_text("{garbage")
    proc = subprocess.run([sys.executable, "-m", "diag.cli", "check", "--config", str(cfg),
                           "--update-baseline"], capture_output=True, text=True, timeout=60)
    assert "corrupt" in proc.stderr and "will be replaced" in proc.stderr
    assert load_baseline(tmp_path / "b.json") == {}  # nothing measured, but valid again
