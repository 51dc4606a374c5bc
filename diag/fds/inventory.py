"""The live fd inventory of a process, read from /proc without touching the target.

Why it is built this way:

* Everything comes from /proc/PID/fd (link targets), /proc/PID/fdinfo (eventfd counters, epoll
  watch lists, timerfd/signalfd/inotify state) and /proc/PID/net/* (socket addresses and state,
  keyed by inode). The target makes no syscall on our behalf: principle 1 of ARCHITECTURE.md.
* It must be fast on big processes (10,000 fds in well under 0.5 s, see
  ``benchmarks/fds_inventory.py``): the fd directory is opened once and every per-fd call uses
  ``dir_fd`` (no path walk per fd), fdinfo is read only for kinds whose detail lives there, and
  the socket tables are parsed once, only when the process has a socket.
* A process is a moving target. An fd can close between listing the directory and reading its
  link (counted in ``closed_while_reading``, never an error); the process can exit mid-scan (the
  rows read so far are kept, ``complete`` is False and a notice says so); without permission the
  scan raises ``CoroscopeError`` with one line. Nothing here raises on a single bad fd.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
import time
from typing import Callable

from diag.errors import CoroscopeError, TargetGone
from diag.model.fds import FdRow, Inventory, Origin

TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
    "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
    "0B": "CLOSING", "0C": "NEW_SYN_RECV",
}
UNIX_TYPES = {"0001": "STREAM", "0002": "DGRAM", "0005": "SEQPACKET"}
UNIX_STATES = {"01": "UNCONNECTED", "02": "CONNECTING", "03": "CONNECTED", "04": "DISCONNECTING"}

# anon_inode names -> kind; the kinds whose fdinfo we parse for detail
ANON_KINDS = {
    "[eventfd]": "eventfd", "[eventpoll]": "epoll", "[timerfd]": "timerfd",
    "[signalfd]": "signalfd", "inotify": "inotify", "[pidfd]": "pidfd",
}
FDINFO_KINDS = frozenset({"eventfd", "epoll", "timerfd", "signalfd", "inotify"})
SOCKET_KINDS = frozenset({"tcp", "tcp6", "udp", "udp6", "unix", "socket"})


# ---------------------------------------------------------------------------------------------
# /proc/net parsing


def _ipv4(hexaddr: str) -> str:
    ip, port = hexaddr.split(":")
    return f"{socket.inet_ntop(socket.AF_INET, int(ip, 16).to_bytes(4, 'little'))}:{int(port, 16)}"


def _ipv6(hexaddr: str) -> str:
    ip, port = hexaddr.split(":")
    # four 32-bit words, each in host (little-endian) order
    raw = b"".join(int(ip[i:i + 8], 16).to_bytes(4, "little") for i in range(0, 32, 8))
    return f"[{socket.inet_ntop(socket.AF_INET6, raw)}]:{int(port, 16)}"


def parse_inet_table(text: str, kind: str) -> dict[int, tuple[str, dict]]:
    """Parse /proc/net/{tcp,tcp6,udp,udp6}: inode -> (kind, info)."""
    fmt = _ipv6 if kind.endswith("6") else _ipv4
    out: dict[int, tuple[str, dict]] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        try:
            inode = int(parts[9])
            info = {"local": fmt(parts[1]), "remote": fmt(parts[2]),
                    "state": TCP_STATES.get(parts[3].upper(), parts[3]) if kind.startswith("tcp") else
                    ("UNCONN" if parts[3] == "07" else TCP_STATES.get(parts[3].upper(), parts[3]))}
        except (ValueError, IndexError):
            continue
        if inode:
            out[inode] = (kind, info)
    return out


def parse_unix_table(text: str) -> dict[int, tuple[str, dict]]:
    """Parse /proc/net/unix: inode -> ("unix", info)."""
    out: dict[int, tuple[str, dict]] = {}
    for line in text.splitlines()[1:]:
        parts = line.split(None, 7)
        if len(parts) < 7:
            continue
        try:
            inode = int(parts[6])
        except ValueError:
            continue
        info = {"type": UNIX_TYPES.get(parts[4], parts[4]), "state": UNIX_STATES.get(parts[5], parts[5]),
                "path": parts[7].strip() if len(parts) > 7 else ""}
        out[inode] = ("unix", info)
    return out


def read_socket_tables(pid: int) -> dict[int, tuple[str, dict]]:
    """All sockets of the process's network namespace, by inode. Missing tables are skipped."""
    table: dict[int, tuple[str, dict]] = {}
    for kind in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{kind}", encoding="ascii", errors="replace") as f:
                table.update(parse_inet_table(f.read(), kind))
        except OSError:
            pass
    try:
        with open(f"/proc/{pid}/net/unix", encoding="utf-8", errors="replace") as f:
            table.update(parse_unix_table(f.read()))
    except OSError:
        pass
    return table


# ---------------------------------------------------------------------------------------------
# fdinfo parsing


def parse_fdinfo(text: str, kind: str) -> tuple[dict, str]:
    """Parse the text of /proc/PID/fdinfo/N for ``kind``: (info, one-line detail)."""
    info: dict = {}
    watches: list[dict] = []
    inotify_watches = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "pos":
            info["pos"] = int(value or 0)
        elif key == "flags":
            info["flags"] = value
        elif key == "eventfd-count":
            # printed in hex by current kernels ("%16llx"); older ones use decimal with the same key
            info["count"] = int(value, 16)
        elif key == "eventfd-semaphore":
            info["semaphore"] = value == "1"
        elif key == "tfd":
            # "tfd:        5 events:       19 data: ..."
            fields = line.split()
            try:
                watches.append({"fd": int(fields[1]), "events": int(fields[3], 16)})
            except (IndexError, ValueError):
                pass
        elif key in ("clockid", "ticks"):
            info[key] = int(value or 0)
        elif key in ("it_value", "it_interval"):
            info[key] = value
        elif key == "sigmask":
            info["sigmask"] = value
        elif key == "inotify wd":
            inotify_watches += 1
    if kind == "epoll":
        info["watches"] = watches
        listed = ",".join(str(w["fd"]) for w in watches[:16]) + ("..." if len(watches) > 16 else "")
        return info, f"watches {len(watches)} fd{'s' if len(watches) != 1 else ''}" + (f": {listed}" if watches else "")
    if kind == "eventfd":
        return info, f"count={info.get('count', '?')}" + (" semaphore" if info.get("semaphore") else "")
    if kind == "timerfd":
        return info, f"clock={info.get('clockid', '?')} ticks={info.get('ticks', '?')} value={info.get('it_value', '?')}"
    if kind == "signalfd":
        sigs = _signals_from_mask(info.get("sigmask", "0"))
        info["signals"] = sigs
        return info, "signals " + (",".join(sigs) or "none")
    if kind == "inotify":
        info["watches"] = inotify_watches
        return info, f"{inotify_watches} watch{'es' if inotify_watches != 1 else ''}"
    return info, ""


def _signals_from_mask(mask: str) -> list[str]:
    try:
        bits = int(mask, 16)
    except ValueError:
        return []
    names = []
    for signum in range(1, 65):
        if bits & (1 << (signum - 1)):
            try:
                names.append(__import__("signal").Signals(signum).name)
            except ValueError:
                names.append(str(signum))
    return names


# ---------------------------------------------------------------------------------------------
# classification


def classify_target(target: str) -> str:
    """The kind from a /proc/PID/fd link text alone, "" when a stat is needed (a path)."""
    if target.startswith("socket:"):
        return "socket"
    if target.startswith("pipe:"):
        return "pipe"
    if target.startswith("anon_inode:"):
        return ANON_KINDS.get(target[len("anon_inode:"):], "anon")
    if target.startswith("/memfd:"):
        return "memfd"
    if target.startswith("/"):
        return ""
    return "other"


def _kind_from_mode(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISCHR(mode):
        return "char"
    if stat.S_ISBLK(mode):
        return "block"
    if stat.S_ISFIFO(mode):
        return "pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "file"


def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return True
    # "pid (comm) S ...": the state follows the last ')'
    state = data[data.rfind(b")") + 2:data.rfind(b")") + 3]
    return state in (b"Z", b"X")


def _describe_socket(info: dict, kind: str) -> str:
    if kind == "unix":
        return f"{info.get('type', '')} {info.get('state', '')} {info.get('path', '')}".strip()
    remote = info.get("remote", "")
    if remote.endswith(":0") and info.get("state") in ("LISTEN", "UNCONN", "CLOSE"):
        return f"{info.get('local')} {info.get('state')}"
    return f"{info.get('local')} -> {remote} {info.get('state')}"


# ---------------------------------------------------------------------------------------------
# the scan


def scan(pid: int | None = None, *, progress: Callable[[int], None] | None = None,
         detail: bool = True) -> Inventory:
    """Read the fd inventory of ``pid`` (default: this process).

    ``progress(n)`` is called after each row with the number of rows so far (the dashboard
    and the tests use it; a test can make the target exit or close fds mid-scan from it).
    ``detail=False`` skips fdinfo and socket tables: only kinds, for cheap periodic counts.
    """
    pid = os.getpid() if pid is None else pid
    started = time.perf_counter()
    try:
        dfd = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TargetGone(f"no such process: {pid}") from None
    except PermissionError:
        raise CoroscopeError(_no_permission(pid)) from None
    inv = Inventory(pid=pid, rows=[])
    own = pid == os.getpid()
    infodfd = None
    listing_fd = -1
    try:
        if own:
            # listdir(dfd) works on a dup of dfd, which shows in the listing and is closed before
            # we read it: find its number (the lowest free fd) so it is not counted as a race.
            listing_fd = os.dup(dfd)
            os.close(listing_fd)
        try:
            names = os.listdir(dfd)
        except PermissionError:
            raise CoroscopeError(_no_permission(pid)) from None
        except (FileNotFoundError, ProcessLookupError):
            raise TargetGone(f"no such process: {pid}") from None
        fds = sorted(int(n) for n in names)
        sockets: dict[int, tuple[str, dict]] | None = None
        for fd in fds:
            if own and (fd == dfd or fd == infodfd):
                continue
            try:
                target = os.readlink(str(fd), dir_fd=dfd)
            except (FileNotFoundError, ProcessLookupError):
                if own and fd == listing_fd:
                    continue
                if _process_gone(pid):
                    inv.complete = False
                    inv.notices.append(f"process {pid} exited during the scan: "
                                       f"{len(inv.rows)} of {len(fds)} fds read")
                    break
                inv.closed_while_reading += 1
                continue
            except PermissionError:
                if not inv.rows:
                    raise CoroscopeError(_no_permission(pid)) from None
                inv.complete = False
                inv.notices.append(_no_permission(pid))
                break
            kind = classify_target(target)
            if not kind:
                try:
                    kind = _kind_from_mode(os.stat(str(fd), dir_fd=dfd).st_mode)
                except FileNotFoundError:
                    kind = "file"      # deleted file or fd closed meanwhile: the link text is still right
                except OSError:
                    kind = "file"
            row = FdRow(fd=fd, kind=kind, target=target)
            if kind in ("file", "dir", "char", "block", "memfd"):
                row.detail = target
            if detail and kind == "socket":
                if sockets is None:
                    sockets = read_socket_tables(pid)
                inode = _inode_of(target)
                known = sockets.get(inode)
                if known is not None:
                    row.kind, row.info = known[0], dict(known[1])
                    row.detail = _describe_socket(row.info, row.kind)
                else:
                    row.detail = "socket (unbound, or not in the tcp/udp/unix tables)"
            elif detail and kind in FDINFO_KINDS:
                if infodfd is None:
                    try:
                        infodfd = os.open(f"/proc/{pid}/fdinfo", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    except OSError:
                        infodfd = -1
                text = _read_small(infodfd, fd) if infodfd >= 0 else None
                if text is None:
                    row.detail = "(closed while being read)"
                else:
                    row.info, row.detail = parse_fdinfo(text, kind)
            inv.rows.append(row)
            if progress is not None:
                progress(len(inv.rows))
    finally:
        if infodfd is not None and infodfd >= 0:
            os.close(infodfd)
        os.close(dfd)
    if inv.closed_while_reading:
        inv.notices.append(f"{inv.closed_while_reading} fd{'s' if inv.closed_while_reading != 1 else ''} "
                           f"closed while being read (skipped)")
    inv.elapsed_s = time.perf_counter() - started
    return inv


def count_kinds(pid: int | None = None) -> dict[str, int]:
    """fds by kind, from link targets only: the cheap sample the trend and the leak checker take."""
    return scan(pid, detail=False).counts_by_kind()


def _inode_of(target: str) -> int:
    try:
        return int(target[target.index("[") + 1:target.index("]")])
    except ValueError:
        return -1


def _read_small(dirfd: int, fd: int) -> str | None:
    try:
        f = os.open(str(fd), os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        return None
    try:
        return os.read(f, 65536).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(f)


def _no_permission(pid: int) -> str:
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
        whose = f"owned by uid {uid}"
    except OSError:
        whose = "of another user"
    return (f"permission denied reading /proc/{pid}/fd (process {whose}; "
            f"run coroscope as that user or as root)")


# ---------------------------------------------------------------------------------------------
# origins


def _family(kind: str) -> str:
    if kind in SOCKET_KINDS:
        return "socket"
    if kind in ("file", "dir", "char", "block"):
        return "file"
    return kind


def attach_origins(inv: Inventory, origins: dict[int, tuple[str, Origin]], source: str) -> int:
    """Set ``row.origin`` from ``origins`` (fd -> (kind recorded at open, Origin)).

    A recorded kind that does not match the fd's kind now means the fd was closed and the
    number reused by something the tracker did not see: that origin is stale and skipped.
    Returns how many rows got an origin.
    """
    n = 0
    for row in inv.rows:
        got = origins.get(row.fd)
        if got is None:
            continue
        kind, origin = got
        if kind not in ("dup", "any") and _family(kind) != _family(row.kind):
            continue
        row.origin = origin
        n += 1
    inv.stacks = source if n or inv.stacks == "none" else inv.stacks
    return n
