"""``coroscope export``: serve /metrics for Prometheus, and push profiles to Pyroscope.

    coroscope export --listen 127.0.0.1:9464 --pid 1234 [--pid 5678]
    coroscope export --listen 127.0.0.1:9464 --all [--profile-to http://pyroscope:4040]

It prints one line with the URL it serves (the port chosen, with port 0) and runs until
SIGINT or SIGTERM. The metrics are ``diag.export.metrics``'s; the push is
``diag.export.push``'s.
"""
from __future__ import annotations

import argparse
import signal
import threading

from diag.errors import CoroscopeError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:9464", metavar="HOST:PORT",
                        help="where to serve /metrics (default 127.0.0.1:9464; port 0: any)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--pid", type=int, action="append", metavar="PID",
                     help="a traced process to export (repeat for several)")
    who.add_argument("--all", action="store_true",
                     help="every traced process on this host, found again at each scrape")
    parser.add_argument("--syscalls", action="store_true",
                        help="also syscalls per request, a histogram by syscall (root, bcc; costs "
                             "the target a tracepoint per syscall)")
    parser.add_argument("--profile-to", metavar="URL",
                        help="push a cpu profile (pprof) of each process to this Pyroscope server")
    parser.add_argument("--profile-every", type=float, default=10.0, metavar="S",
                        help="seconds each pushed profile covers (default 10)")
    parser.add_argument("--profile-rate", type=float, default=100.0, metavar="HZ",
                        help="samples per second of the pushed profiles (default 100)")
    parser.add_argument("--profile-queue", type=int, default=32, metavar="N",
                        help="profiles kept while the server is down (default 32; oldest dropped)")
    parser.add_argument("--profile-backoff-max", type=float, default=30.0, metavar="S",
                        help="longest wait between retries while the server is down (default 30)")


def main(args: argparse.Namespace) -> int:
    from .metrics import FleetCollector
    from .server import MetricsServer, parse_listen

    if args.profile_every < 1:
        raise CoroscopeError("--profile-every must be at least 1 second")
    if args.profile_queue < 1:
        raise CoroscopeError("--profile-queue must be at least 1")
    for pid in args.pid or []:
        if pid <= 0:
            raise CoroscopeError(f"--pid {pid} is not a process id")
    if args.profile_to:
        from .push import check_url
        check_url(args.profile_to)
    host, port = parse_listen(args.listen)
    collector = FleetCollector(None if args.all else list(args.pid), syscalls=args.syscalls)
    try:
        server = MetricsServer(collector, host, port)
    except CoroscopeError:
        collector.close()
        raise
    pusher = None
    if args.profile_to:
        from .push import Pusher
        pusher = Pusher(args.profile_to, args.profile_every, args.profile_rate,
                        args.profile_queue, args.profile_backoff_max)
    stop = threading.Event()

    def on_signal(_sig, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    shown = host if ":" not in host else f"[{host}]"
    print(f"coroscope export: serving http://{shown}:{server.port}/metrics "
          f"({'every traced process' if args.all else 'pid ' + ', '.join(map(str, args.pid))})",
          flush=True)
    thread = threading.Thread(target=server.serve_forever, name="coroscope-http", daemon=True)
    thread.start()
    try:
        while not stop.wait(1.0 if pusher is None else 0.5):
            if pusher is not None:
                with collector.lock:
                    targets = [(t.pid, t.service) for t in collector.targets.values()]
                for pid, service in targets:
                    pusher.watch(pid, service)
    finally:
        server.shutdown()
        if pusher is not None:
            pusher.close()
        collector.close()
    return 0
