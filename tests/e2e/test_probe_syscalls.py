"""Watching a traced process costs it no syscall: the target's syscalls, counted with eBPF per
round of a fixed echo workload, are the same with a probe reader attached and following the ring
as without it (and the same as with tracing off: writing records makes no syscall either)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

from diag.probe import ProbeReader
from tests.capabilities import require

TARGET = textwrap.dedent("""
    import asyncio, os, sys
    import runtime
    from runtime import tracing
    from runtime.requests import per_data_received
    if os.environ.get("TRACE") == "1":
        tracing.enable()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
        def data_received(self, data):
            self.transport.write(data)

    async def main(n):
        loop = asyncio.get_running_loop()
        server = await loop.create_server(per_data_received(Echo), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        print("ready", flush=True)
        while sys.stdin.readline().strip():      # one round per line; blocks inside a step
            for _ in range(n):
                writer.write(b"ping\\n")
                await reader.readline()
            sys.stdout.write("done\\n")
            sys.stdout.flush()
        writer.close()
        server.close()

    runtime.run(main(int(sys.argv[1])))
""")

BPF_PROGRAM = """
BPF_HASH(counts, u32, u64, 1024);
TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    if ((bpf_get_current_pid_tgid() >> 32) != TGID) return 0;
    u32 nr = args->id;
    counts.increment(nr);
    return 0;
}
"""

ROUND_TRIPS = 300


class Target:
    """A target process plus an eBPF counter of its syscalls by number."""

    def __init__(self, trace: bool):
        from bcc import BPF
        env = dict(__import__("os").environ, TRACE="1" if trace else "0")
        self.proc = subprocess.Popen([sys.executable, "-c", TARGET, str(ROUND_TRIPS)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.bpf = BPF(text=BPF_PROGRAM.replace("TGID", str(self.proc.pid)).encode())

    def _blocked_in_read(self) -> None:
        """Wait until the target sits in read(stdin): every syscall of the round has entered."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with open(f"/proc/{self.proc.pid}/syscall") as f:
                if f.read().split()[:1] == ["0"]:
                    return
            time.sleep(0.005)
        raise AssertionError("target never blocked in read")

    def _counts(self) -> dict[int, int]:
        return {k.value: v.value for k, v in self.bpf["counts"].items()}

    def round(self, with_reader: bool) -> tuple[dict[int, int], int]:
        """Syscalls of one round by number, and how many records a reader took meanwhile."""
        self._blocked_in_read()
        before = self._counts()
        stop, taken = threading.Event(), [0]
        if with_reader:
            reader = ProbeReader.attach(self.proc.pid)

            def follow():
                while not stop.is_set():
                    taken[0] += len(reader.poll_raw())
                    reader.threads()
                    reader.counters()
            thread = threading.Thread(target=follow)
            thread.start()
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "done"
        self._blocked_in_read()
        if with_reader:
            stop.set()
            thread.join()
            taken[0] += len(reader.poll_raw())
            reader.close()
        after = self._counts()
        diff = {nr: after.get(nr, 0) - before.get(nr, 0) for nr in after}
        return {nr: n for nr, n in diff.items() if n}, taken[0]

    def close(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=20)
        self.bpf.cleanup()


def test_attaching_the_reader_adds_zero_syscalls():
    require("bcc")
    traced = Target(trace=True)
    try:
        traced.round(with_reader=False)                   # warm-up
        alone, _ = traced.round(with_reader=False)
        watched, taken = traced.round(with_reader=True)
        alone_again, _ = traced.round(with_reader=False)
    finally:
        traced.close()
    assert taken > 4 * ROUND_TRIPS                        # the reader really followed the ring
    assert sum(alone.values()) >= 4 * ROUND_TRIPS         # and the target really worked
    assert watched == alone == alone_again

    untraced = Target(trace=False)
    try:
        untraced.round(with_reader=False)
        off, _ = untraced.round(with_reader=False)
    finally:
        untraced.close()
    assert off == alone                                   # writing records makes no syscall
