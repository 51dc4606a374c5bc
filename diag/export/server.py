"""The /metrics endpoint: prometheus_client's text format, served by the standard library.

prometheus_client writes the exposition text (``generate_latest`` over a registry holding the
fleet collector); the HTTP server is ``http.server``'s, because the text needs a few comment
lines in front that the library has no place for: "no traced process" when there is none
(an empty, valid /metrics, not an error: a fleet's exporter outlives its services) and the
pids whose series just ended. Prometheus ignores comments it does not know.

It listens on 127.0.0.1 unless told otherwise: the numbers say what a service does, and
nothing coroscope creates is readable by other users by default.
"""
from __future__ import annotations

import errno
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from diag.errors import CoroscopeError


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise CoroscopeError(f"--listen {text}: give HOST:PORT (PORT a number, 0 for any)") from None
    if not 0 <= number <= 65535:
        raise CoroscopeError(f"--listen {text}: port {number} is out of range")
    return host, number


class MetricsServer:
    def __init__(self, collector, host: str, port: int):
        self.collector = collector
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.lock = threading.Lock()         # one scrape at a time: they share the readers
        handler = _handler_for(self)
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            why = ("address already in use" if exc.errno == errno.EADDRINUSE
                   else exc.strerror or str(exc))
            raise CoroscopeError(f"cannot listen on {host}:{port}: {why}") from None
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]

    def body(self) -> bytes:
        with self.lock:
            text = generate_latest(self.registry)
            comments = self.collector.comments()
        head = "".join(line + "\n" for line in comments).encode()
        return head + text

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler_for(server: MetricsServer):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404, "coroscope export serves /metrics")
                return
            body = server.body()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):     # a scrape a second is not worth a line each
            pass

    return Handler
