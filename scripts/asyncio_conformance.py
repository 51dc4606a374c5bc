"""CPython's own asyncio tests, run on the runtime and on stock asyncio, side by side.

    python scripts/asyncio_conformance.py [--jobs N] [--json FILE] [MODULE ...]

Each test module runs in its own interpreter twice: once as shipped (stock asyncio), once with
the runtime installed the way ``runtime.install()`` would and more: asyncio's default policy
class and ``asyncio.SelectorEventLoop`` (and 3.13's ``asyncio.EventLoop``) are replaced too,
because the test modules reset the policy (``set_event_loop_policy(None)``) and construct ``SelectorEventLoop()`` directly. Every
test's outcome is recorded, and the script fails (exit 1) when a test that passes on stock asyncio
does not pass on the runtime, unless it is in KNOWN_DIFFERENCES with the reason: tests that
inspect asyncio's private internals which the runtime replaces on purpose.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODULES = (
    "test_tasks", "test_futures", "test_streams", "test_server", "test_sock_lowlevel",
    "test_taskgroups", "test_timeouts", "test_queues", "test_locks", "test_runners",
    "test_events", "test_subprocess", "test_sendfile", "test_waitfor", "test_context",
    "test_protocols", "test_transports", "test_pep492", "test_buffered_proto",
    "test_sock_lowlevel", "test_threads", "test_asyncio_waitfor", "test_eager_task_factory",
)

# test id (or a prefix of one) -> why the runtime differs from stock asyncio there on purpose.
KNOWN_DIFFERENCES: dict[str, str] = {}

OUTCOMES = ("pass", "fail", "error", "skip")


class _Recorder(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.outcomes: dict[str, str] = {}
        self.details: dict[str, str] = {}

    def addSuccess(self, test):
        self.outcomes[test.id()] = "pass"

    def addFailure(self, test, err):
        self.outcomes[test.id()] = "fail"
        self.details[test.id()] = self._exc_info_to_string(err, test)[-2000:]

    def addError(self, test, err):
        self.outcomes[test.id()] = "error"
        self.details[test.id()] = self._exc_info_to_string(err, test)[-2000:]

    def addSkip(self, test, reason):
        self.outcomes[test.id()] = "skip"

    def addExpectedFailure(self, test, err):
        self.outcomes[test.id()] = "pass"

    def addUnexpectedSuccess(self, test):
        self.outcomes[test.id()] = "fail"

    def addSubTest(self, test, subtest, err):
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self.outcomes[test.id()] = kind
            self.details[test.id()] = self._exc_info_to_string(err, test)[-2000:]


def install_runtime_everywhere() -> list[int]:
    """Make every loop the tests create a runtime loop; returns a counter of those created."""
    import asyncio
    import asyncio.unix_events

    import runtime

    created = [0]
    original_init = runtime.Loop.__init__

    def counting_init(self, *args, **kwargs):
        created[0] += 1
        original_init(self, *args, **kwargs)

    runtime.Loop.__init__ = counting_init

    asyncio.DefaultEventLoopPolicy = runtime.EventLoopPolicy
    asyncio.unix_events.DefaultEventLoopPolicy = runtime.EventLoopPolicy
    asyncio.SelectorEventLoop = runtime.Loop
    asyncio.unix_events.SelectorEventLoop = runtime.Loop
    if hasattr(asyncio, "EventLoop"):  # 3.13's name for the platform's loop class
        asyncio.EventLoop = runtime.Loop
        asyncio.unix_events.EventLoop = runtime.Loop
    asyncio.set_event_loop_policy(None)
    return created


# The slow modules run split by test class over several interpreters ("shards"), so that the
# whole comparison fits in a test run's budget.
SHARDS = {"test_tasks": 4, "test_events": 3, "test_subprocess": 2, "test_futures": 2}


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


def _shard(suite: unittest.TestSuite, index: int, count: int) -> unittest.TestSuite:
    """The tests of every count-th test class (sorted by name), starting at index."""
    tests = list(_flatten(suite))
    classes = sorted({type(t).__qualname__ for t in tests})
    keep = set(classes[index::count])
    return unittest.TestSuite(t for t in tests if type(t).__qualname__ in keep)


def worker(mode: str, target: str) -> dict:
    """Run one module (or one shard of it: "module#index/count") here; outcome per test id."""
    # Shortly before the parent gives up on us, every thread's stack goes to stderr and we exit,
    # so that a module which hangs is reported with the test it hung in.
    deadline = float(os.environ.get("CONFORMANCE_WORKER_TIMEOUT", 0))
    if deadline > 15:
        import faulthandler

        faulthandler.dump_traceback_later(deadline - 10, exit=True)
    created = install_runtime_everywhere() if mode == "runtime" else [0]
    from test import support

    support.use_resources = []  # as regrtest with no -u: network/cpu-heavy tests skip in both runs
    module, _, shard = target.partition("#")
    suite = unittest.defaultTestLoader.loadTestsFromName(f"test.test_asyncio.{module}")
    if shard:
        index, count = map(int, shard.split("/"))
        suite = _shard(suite, index, count)
    result = _Recorder()
    suite.run(result)
    # A crash that never reached a test (import error) shows as an error of the module itself.
    for test, err in result.errors:
        if not hasattr(test, "id") or test.id() not in result.outcomes:
            result.outcomes[str(test)] = "error"
            result.details[str(test)] = err[-2000:]
    return {"outcomes": result.outcomes, "details": result.details, "runtime_loops": created[0]}


def _run_worker(mode: str, module: str, timeout: float) -> dict:
    """module: a module name, or a shard of one (see worker)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("COROSCOPE_LOOP", None)
    env["CONFORMANCE_WORKER_TIMEOUT"] = str(timeout)
    cmd = [sys.executable, "-X", "faulthandler", str(Path(__file__).resolve()), "--worker", mode, module]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"outcomes": {f"{module} (whole module)": "error"},
                "details": {f"{module} (whole module)": f"timed out after {timeout}s"}}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"outcomes": {f"{module} (whole module)": "error"},
                "details": {f"{module} (whole module)": (proc.stderr or proc.stdout)[-3000:]}}
    result = json.loads(lines[-1])
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def known_reason(test_id: str) -> str | None:
    for prefix, reason in KNOWN_DIFFERENCES.items():
        if test_id.startswith(prefix):
            return reason
    return None


def available_modules(modules) -> list[str]:
    import test.test_asyncio as pkg

    here = Path(pkg.__file__).parent
    seen, found = set(), []
    for name in modules:
        if name not in seen and (here / f"{name}.py").exists():
            seen.add(name)
            found.append(name)
    return found


def run(modules=MODULES, jobs: int = 4, timeout: float = 300) -> dict:
    """Both runs of every module. Returns per module counts and the list of regressions."""
    modules = available_modules(modules)
    start = time.monotonic()
    targets = [(m, f"{m}#{i}/{SHARDS[m]}" if m in SHARDS else m)
               for m in sorted(modules, key=lambda m: -SHARDS.get(m, 1))
               for i in range(SHARDS.get(m, 1))]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [(mode, m, pool.submit(_run_worker, mode, target, timeout))
                   for m, target in targets for mode in ("asyncio", "runtime")]
        results: dict = {}
        for mode, m, fut in futures:
            part = fut.result()
            merged = results.setdefault((mode, m), {"outcomes": {}, "details": {},
                                                    "runtime_loops": 0, "seconds": 0})
            merged["outcomes"].update(part["outcomes"])
            merged["details"].update(part["details"])
            merged["runtime_loops"] += part.get("runtime_loops", 0)
            merged["seconds"] = max(merged["seconds"], part.get("seconds") or 0)
    table, regressions, excused = {}, [], []
    # A module that never reported (it timed out, or crashed before its first test), in either
    # run: its one line says why, beside the table.
    module_errors = [{"mode": mode, "test": test_id, "detail": part["details"].get(test_id, "")}
                     for (mode, _m), part in results.items()
                     for test_id in part["outcomes"] if test_id.endswith("(whole module)")]
    for m in modules:
        row = {}
        for mode in ("asyncio", "runtime"):
            counts = dict.fromkeys(OUTCOMES, 0)
            for outcome in results[(mode, m)]["outcomes"].values():
                counts[outcome] += 1
            row[mode] = counts
        row["runtime_loops"] = results[("runtime", m)].get("runtime_loops", 0)
        row["seconds"] = {mode: results[(mode, m)].get("seconds") for mode in ("asyncio", "runtime")}
        table[m] = row
        stock = results[("asyncio", m)]["outcomes"]
        ours = results[("runtime", m)]
        for test_id in {**stock, **ours["outcomes"]}:
            # A test stock asyncio passes that the runtime does not, or one the runtime alone
            # reports (a whole module that crashed).
            if ours["outcomes"].get(test_id) == "pass" or stock.get(test_id, "pass") != "pass":
                continue
            entry = {"test": test_id, "runtime": ours["outcomes"].get(test_id, "missing"),
                     "detail": ours["details"].get(test_id, "")}
            reason = known_reason(test_id)
            if reason:
                excused.append({**entry, "reason": reason})
            else:
                regressions.append(entry)
    return {"modules": table, "regressions": regressions, "known_differences": excused,
            "module_errors": module_errors,
            "seconds": round(time.monotonic() - start, 1), "python": platform.python_version(),
            "runtime_paths": runtime_paths()}


def runtime_paths() -> str:
    """Which of the runtime's hot paths the workers run (they inherit this environment)."""
    from runtime import accel

    return "C accelerator" if accel.COMPILED else f"pure Python ({accel.REASON})"


def _why(detail: str) -> str:
    """One line for a module without a result: the test frame it hung in, if the worker dumped
    its stacks (see worker), else the last line of what it said."""
    frames = [line.strip() for line in detail.splitlines()
              if "test_asyncio" in line and line.strip().startswith("File ")]
    # faulthandler lists the most recent call first: the first frame in a test method names it
    in_test = [f for f in frames if " in test" in f]
    if frames:
        return "hung at " + (in_test or frames)[0]
    last = detail.strip().splitlines()[-1:]
    return last[0] if last else "no output"


def render(report: dict) -> str:
    head = (f"{'module':<22} {'asyncio pass/fail/err/skip':>27} {'runtime pass/fail/err/skip':>27}"
            f" {'runtime loops':>14}")
    lines = [f"CPython {report['python']}, the runtime on its {report['runtime_paths']}",
             head, "-" * len(head)]
    totals = {mode: dict.fromkeys(OUTCOMES, 0) for mode in ("asyncio", "runtime")}
    for m, row in report["modules"].items():
        cells = []
        for mode in ("asyncio", "runtime"):
            c = row[mode]
            for k in OUTCOMES:
                totals[mode][k] += c[k]
            cells.append("/".join(str(c[k]) for k in OUTCOMES))
        lines.append(f"{m:<22} {cells[0]:>27} {cells[1]:>27} {row['runtime_loops']:>14}")
    lines.append("-" * len(head))
    cells = ["/".join(str(totals[mode][k]) for k in OUTCOMES) for mode in ("asyncio", "runtime")]
    loops = sum(row["runtime_loops"] for row in report["modules"].values())
    lines.append(f"{'total':<22} {cells[0]:>27} {cells[1]:>27} {loops:>14}")
    for e in report.get("module_errors", ()):
        lines.append(f"no result ({e['mode']}): {e['test']}: {_why(e['detail'])}")
    for e in report["known_differences"]:
        lines.append(f"known difference: {e['test']} ({e['runtime']}): {e['reason']}")
    for e in report["regressions"]:
        lines.append(f"REGRESSION: {e['test']} ({e['runtime']})")
    lines.append(f"{len(report['regressions'])} regressions, "
                 f"{len(report['known_differences'])} known differences, {report['seconds']} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="test_asyncio module names (default: all listed)")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--json", help="write the full report here")
    parser.add_argument("--details", action="store_true", help="print the traceback of each regression")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    report = run(args.modules or MODULES, jobs=args.jobs)
    print(render(report))
    if args.details:
        for e in report["regressions"]:
            print(f"\n=== {e['test']}\n{e['detail']}")
    if args.json:
        from diag.model.base import write_json_atomic

        write_json_atomic(args.json, report)
    return 1 if report["regressions"] else 0


if __name__ == "__main__":
    sys.exit(main())
