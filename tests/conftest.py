import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Subprocesses started by tests import the project from the checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# Tests whose outcome cannot depend on the CPython version (rendering, argument parsing, pure
# arithmetic on our own data, how coroscope starts, stops and reports on a command): `make test`
# runs them on the default version only, and the runs on the other versions
# (scripts/test-other-pythons.sh) pass --version-dependent-only. A file listed here is
# version-independent as a whole; a single test says so with @pytest.mark.version_independent.
VERSION_INDEPENDENT = {
    "test_backtrace_format.py", "test_benchmark_paired.py", "test_benchmark_spread.py", "test_check.py", "test_cli.py",
    "test_dashboard_app.py", "test_dashboard_cli.py", "test_dashboard_scenario.py",
    "test_doctor.py", "test_export_units.py", "test_pprof.py", "test_syscalls.py",
    "test_warnings.py", "test_report_html.py", "test_dashboard_tmux.py", "test_live_awaits.py",
    "test_started_command.py", "test_export_push.py",
}


def pytest_addoption(parser):
    parser.addoption("--version-dependent-only", action="store_true",
                     help="leave out the tests whose outcome cannot depend on the CPython version")


# What does not pass yet on CPython 3.12 / 3.13, with why: skipped there with that reason, so the
# runs say it every time.
NOT_YET_ON_LATER_PYTHONS = {
}


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--version-dependent-only"):
        return
    import pytest
    if sys.version_info >= (3, 12):
        for item in items:
            why = NOT_YET_ON_LATER_PYTHONS.get(item.path.name)
            if why:
                item.add_marker(pytest.mark.skip(reason=f"not yet on CPython 3.12+: {why}"))
    kept = [item for item in items if item.path.name not in VERSION_INDEPENDENT
            and item.get_closest_marker("version_independent") is None]
    config.hook.pytest_deselected(items=[i for i in items if i not in kept])
    items[:] = kept
