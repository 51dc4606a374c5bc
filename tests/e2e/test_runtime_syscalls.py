"""Syscalls the runtime's echo server makes per request, counted by eBPF from outside the process."""
from __future__ import annotations

from benchmarks.echo import SyscallCounter, measure
from tests.capabilities import require


def test_echo_server_per_request_is_one_recv_one_send_and_no_mmap():
    require("bcc")
    counter = SyscallCounter()
    try:
        result = measure("runtime", 50, warmup=0.2, seconds=0.7, counter=counter)
    finally:
        counter.close()
    requests, syscalls = result["requests"], result["syscalls"]
    assert requests > 1000
    # The server was idle at both edges of the window, so the counts are exact: one read and
    # one write per 64-byte message...
    assert syscalls["recvfrom"] == requests and syscalls["sendto"] == requests, syscalls
    # ...no buffer mapped, remapped or unmapped per read (asyncio's transport: 3 per request),
    # no epoll_ctl (registration is persistent, and no write waited for EPOLLOUT), and nothing
    # else but the epoll_wait calls the ready connections share.
    assert set(syscalls) == {"recvfrom", "sendto", "epoll_wait"}, syscalls
    assert syscalls["epoll_wait"] < requests
