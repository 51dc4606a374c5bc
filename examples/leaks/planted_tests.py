"""The planted leaks as pytest tests, for coroscope's pytest plugin.

Not collected by the project's suite (not under tests/, not named test_*.py); run on purpose:

    pytest examples/leaks/planted_tests.py -p no:cacheprovider

Every ``test_leaky_*`` must end in a teardown error from the plugin naming the kind and the
file:line that opened the resource; every ``test_fixed_*`` must pass. The marker turns the
plugin on for this module only.
"""
from __future__ import annotations

import asyncio

import pytest

from examples.leaks import client, eventfd_loop, poller, worker

pytestmark = pytest.mark.coroscope_leaks(retry_timeout=0.3)


@pytest.fixture(scope="module")
def line_server():
    client.setup()
    yield
    client.teardown()


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def test_leaky_eventfd_loop():
    eventfd_loop.cycle()


def test_fixed_eventfd_loop():
    eventfd_loop.cycle_fixed()


def test_leaky_client(line_server):
    client.cycle()


def test_fixed_client(line_server):
    client.cycle_fixed()


def test_leaky_worker():
    worker.cycle()


def test_fixed_worker():
    worker.cycle_fixed()


def test_leaky_poller(loop):
    loop.run_until_complete(poller.cycle())


def test_fixed_poller(loop):
    loop.run_until_complete(poller.cycle_fixed())


@pytest.mark.coroscope_leaks(ignore_kinds=["eventfd"], retry_timeout=0.3)
def test_leaky_eventfd_loop_ignored_by_kind():
    eventfd_loop.cycle()


@pytest.mark.coroscope_leaks(ignore_frames=["worker.py:"], retry_timeout=0.3)
def test_leaky_worker_ignored_by_frame():
    worker.cycle()
