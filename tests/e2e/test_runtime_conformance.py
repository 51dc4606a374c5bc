"""CPython's asyncio test suite on the runtime: everything stock asyncio passes, the runtime passes."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "asyncio_conformance.py"


def _load():
    spec = importlib.util.spec_from_file_location("asyncio_conformance", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(600)
def test_cpython_asyncio_tests_pass_on_the_runtime():
    conformance = _load()
    try:
        import test.test_asyncio  # noqa: F401 - the suite ships with CPython, not always with distros
    except ImportError:
        pytest.skip("CPython's test package is not installed")
    report = conformance.run(jobs=4)
    print(conformance.render(report))
    assert report["regressions"] == [], conformance.render(report)
    stock = sum(row["asyncio"]["pass"] for row in report["modules"].values())
    ours = sum(row["runtime"]["pass"] for row in report["modules"].values())
    assert ours >= stock - len(report["known_differences"])
    # The run did exercise the runtime: the loop-based modules created runtime loops.
    for module in ("test_events", "test_streams", "test_sock_lowlevel", "test_subprocess", "test_sendfile"):
        assert report["modules"][module]["runtime_loops"] > 0, module
