"""coroscope's pytest plugin: fail tests that leave fds, threads, child processes or tasks behind.

Loaded into every pytest run through the pytest11 entry point, so it must cost nothing when
off: this module imports only pytest, and the leak machinery (``diag.fds``) is imported the
first time a test is checked. It is off unless ``--coroscope-leaks`` is given (every test is
checked) or a test carries the ``coroscope_leaks`` marker:

    @pytest.mark.coroscope_leaks(ignore_kinds=["thread"], ignore_frames=["mylib/pool.py"],
                                 retry_timeout=0.5)

How a test is checked: a snapshot of what the process holds is taken after the test's setup
(so fixtures, including session fixtures created on the way, are in the baseline) and compared
after its teardown (so what fixtures close is not a leak). New items are retried with a short
exponential backoff (goleak's way) until ``retry_timeout``; what remains is reported as an
error in the test's teardown, one line per kind with the file:line that opened it. Not seen:
leaks made by a function-scoped fixture's own setup (they are in the baseline).

Options: --coroscope-leaks, --coroscope-leaks-ignore-kind KIND, --coroscope-leaks-ignore-frame TEXT,
--coroscope-leaks-retry SECONDS. Kinds: the fd kinds of ``coroscope fds`` (eventfd, tcp, unix,
pipe, file... "socket" for every socket, "fd" for every fd), thread, process, task.
"""
from __future__ import annotations

import pytest

_BASELINE = pytest.StashKey[object]()
_DEFAULT_RETRY = 1.0


def pytest_addoption(parser):
    group = parser.getgroup("coroscope", "coroscope leak checks")
    group.addoption("--coroscope-leaks", action="store_true", default=False,
                    help="fail tests that leave behind fds, threads, child processes or asyncio tasks")
    group.addoption("--coroscope-leaks-ignore-kind", action="append", default=[], metavar="KIND",
                    help="do not report leaks of this kind (repeatable)")
    group.addoption("--coroscope-leaks-ignore-frame", action="append", default=[], metavar="TEXT",
                    help="do not report items whose opening stack has a frame containing TEXT (repeatable)")
    group.addoption("--coroscope-leaks-retry", type=float, default=_DEFAULT_RETRY, metavar="SECONDS",
                    help="keep re-checking a leaking test for this long before failing it (default 1)")


def pytest_configure(config):
    if config.getoption("coroscope_leaks", False):
        # track from the start so resources opened during collection carry stacks too
        from diag.fds import fdtrack
        fdtrack.install()


def _checked(item) -> bool:
    return bool(item.config.getoption("coroscope_leaks", False)) or \
        item.get_closest_marker("coroscope_leaks") is not None


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_setup(item):
    result = yield
    if _checked(item):
        from diag.fds import fdtrack, leaks
        fdtrack.install()
        item.stash[_BASELINE] = leaks.take_snapshot()
    return result


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    baseline = item.stash.get(_BASELINE, None)
    if baseline is None:
        return result
    del item.stash[_BASELINE]
    from diag.fds import leaks

    marker = item.get_closest_marker("coroscope_leaks")
    kw = marker.kwargs if marker is not None else {}
    config = item.config
    filters = leaks.Filters(
        kinds=frozenset(config.getoption("coroscope_leaks_ignore_kind") or []) | frozenset(kw.get("ignore_kinds", ())),
        frames=tuple(config.getoption("coroscope_leaks_ignore_frame") or []) + tuple(kw.get("ignore_frames", ())))
    timeout = float(kw.get("retry_timeout", config.getoption("coroscope_leaks_retry")))
    _snap, leaked, retries = leaks.settle(baseline, filters, timeout=timeout)
    if leaked:
        found = leaks.group_leaks(leaked)
        lines = [f"coroscope: {item.nodeid} leaked {len(leaked)} resource{'s' if len(leaked) != 1 else ''} "
                 f"(still there after {retries} retries):"]
        for leak in found:
            lines.append(f"  {leak.message}")
            for example in leak.examples[:3]:
                lines.append(f"    e.g. {example}")
        pytest.fail("\n".join(lines), pytrace=False)
    return result
