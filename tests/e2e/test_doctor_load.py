"""The built-in load client against the real example service: exact request counts per command."""
from __future__ import annotations

import sys

import pytest

from diag.doctor.load import LoadProcess
from diag.doctor.measure import count_fds, settled_count
from diag.doctor.target import Target
from diag.errors import TargetGone


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "runtime"])
def test_client_sends_exactly_what_it_is_told(loop):
    with Target([sys.executable, "-m", "examples.http_service", "--port", "0"], loop=loop) as target:
        idle = settled_count(lambda: count_fds(target.pid))
        with LoadProcess(target.host, target.port) as client:
            assert client.connect(3) == {"count": 3, "errors": 0}
            answer = client.requests(7)
            assert (answer["count"], answer["errors"]) == (21, 0)
            assert sum(b["count"] for b in answer["timeline"]) == 21
            # the server holds one socket per connection while they are open ...
            assert settled_count(lambda: count_fds(target.pid)) == idle + 3
            client.close_connections()
        # ... and none after the client closed them
        assert settled_count(lambda: count_fds(target.pid)) == idle
        assert "loop=" + loop in target.output[0]


def test_a_service_that_dies_before_listening_is_one_clear_error():
    with pytest.raises(TargetGone, match="exited with status 2 before listening"):
        Target([sys.executable, "-m", "examples.http_service", "--loop", "nope"])
