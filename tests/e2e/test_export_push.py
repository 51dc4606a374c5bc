"""`coroscope export --profile-to`: profiles pushed to a Pyroscope ingest endpoint.

No Pyroscope server is installable here, so the receiver is a local HTTP server that takes
what Pyroscope's /ingest takes (query parameters, a multipart ``profile`` field) and decodes
the pprof with the schema's generated classes. It starts down (its socket bound, not
listening: connections are refused) to show the retries, the bounded queue and the one
warning line, then comes up."""
from __future__ import annotations

import email.parser
import email.policy
import gzip
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

from diag.flame import profile_pb2
from tests.capabilities import require
from tests.e2e.test_export import Exporter, Service

QUEUE = 3


class Receiver:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))          # bound, not listening: "down"
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received: list[tuple[dict, profile_pb2.Profile]] = []
        self.server = None

    def up(self) -> None:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                body = self.rfile.read(int(self.headers["Content-Length"]))
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body)
                part = next(p for p in message.iter_parts()
                            if p.get_param("name", header="content-disposition") == "profile")
                profile = profile_pb2.Profile()
                profile.ParseFromString(gzip.decompress(part.get_payload(decode=True)))
                received.append((query, profile))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(self.sock.getsockname(), Handler, bind_and_activate=False)
        self.server.socket.close()
        self.server.socket = self.sock
        self.server.server_activate()                 # listen(): "up"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        if self.server is not None:
            self.server.shutdown()
        self.sock.close()


def _lines(stream, into: list):
    for line in stream:
        into.append(line)


def _wait(cond, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_profiles_are_pushed_retried_while_down_and_queued_within_bounds():
    require("py-spy", "ptrace")
    receiver = Receiver()
    service = Service("--busy")
    exporter = Exporter("--pid", str(service.pid), "--profile-to", receiver.url,
                        "--profile-every", "1", "--profile-queue", str(QUEUE),
                        "--profile-backoff-max", "1")
    stderr: list[str] = []
    reader = threading.Thread(target=_lines, args=(exporter.proc.stderr, stderr), daemon=True)
    reader.start()
    try:
        _wait(lambda: stderr)                         # the first failed push
        down_since = time.time()
        # long enough for more profiles than the queue holds (one a second)
        time.sleep(2 * QUEUE + 1)
        assert len(stderr) == 1, stderr               # one line for the whole outage
        assert "warning" in stderr[0] and receiver.url in stderr[0]
        up_at = time.time()
        receiver.up()
        _wait(lambda: len(receiver.received) >= QUEUE + 2)

        # made while it was down: ended (``until`` is the end's whole second) by the time it
        # came up; the one being recorded at that moment may end in the same second, so the
        # bound is one more than the queue. Unbounded, about seven would arrive.
        from_outage = [q for q, _p in receiver.received if int(q["until"]) <= int(up_at)]
        assert 1 <= len(from_outage) <= QUEUE + 1, ([q["until"] for q, _ in receiver.received],
                                                    up_at)
        assert up_at - down_since > QUEUE + 1
        query, profile = receiver.received[-1]
        assert query["format"] == "pprof" and query["spyName"] == "coroscope"
        assert query["name"] == (f"examples.fleet_service.cpu{{service=examples.fleet_service,"
                                 f"pid={service.pid}}}")
        st = profile.string_table
        assert "busy_work" in {st[f.name] for f in profile.function}
        assert {(st[lab.key], st[lab.str]) for s in profile.sample for lab in s.label} >= {
            ("thread", "MainThread")}
        assert [(st[t.type], st[t.unit]) for t in profile.sample_type][-1] == ("cpu",
                                                                               "nanoseconds")
    finally:
        exporter.stop(read_stderr=False)
        reader.join(timeout=10)
        service.stop()
        receiver.close()
    assert len(stderr) == 1, stderr                   # nothing more once it was back
