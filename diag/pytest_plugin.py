"""coroscope pytest plugin (loaded into every pytest run through the pytest11 entry point).

Off unless ``--coroscope-leaks`` is given or a test carries the ``coroscope_leaks`` marker.
Kept cheap to import: the leak machinery is imported only when the plugin is turned on.
"""
from __future__ import annotations


def pytest_addoption(parser):
    group = parser.getgroup("coroscope")
    group.addoption("--coroscope-leaks", action="store_true", default=False,
                    help="fail tests that leave behind fds, threads, child processes or asyncio tasks")
