"""Warnings: small lints over one ``LiveSnapshot``, shown by `coroscope top`, gated by `check`.

tokio-console's warnings can only be looked at; ours are pure functions of the data model, so
the dashboard draws them and `coroscope check` (diag.check) fails a CI run on them, from the
same code. Each lint is one unit: a name (stable: configuration files refer to it), a one-line
summary of what it means, thresholds with defaults, and ``check(snapshot, **thresholds)``
returning ``Finding``s. A lint never does I/O and never looks at anything but the snapshot.

Lints:
    blocked-loop     a step ran longer than a threshold (100 ms, asyncio's
                     slow_callback_duration), blocking every other task; with its stack
    never-yielded    a step is running right now and has been for over a threshold (1 s)
    self-wakes       a task woke itself (bare yield / sleep(0)) in over half of its wakes (its
                     first step is no wake); from the wake kind of the probe's step records
    pending-forever  a task waited longer than a threshold (60 s) without being stepped
    never-awaited    a coroutine object was created and garbage-collected without being awaited
                     (the probe's coro_never_awaited record: where it was created)
    fd-leak          an fd kind grew across a window of samples and never came down
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from diag.model.live import Finding, LiveSnapshot, TaskRow


# frames that are never the answer to "where": the loop, and the wrappers that record fds
_MACHINERY = ("/asyncio/", "/runtime/", "/selectors.py", "/threading.py", "/diag/fds/",
              "/socket.py")


def _label(task_id: int, name: str, coro: str) -> str:
    # asyncio's default names ("Task-12") say nothing: name the coroutine beside them
    if coro and name.startswith("Task-"):
        return f"task {task_id} ({name} {coro})"
    return f"task {task_id} ({name})"


def _task_label(task: TaskRow) -> str:
    return _label(task.id, task.name, task.coro)


def user_frame(stack: list[str]) -> str:
    """The innermost frame outside asyncio and the runtime: where user code stands."""
    for frame in reversed(stack):
        if not any(part in frame for part in _MACHINERY):
            return frame
    return stack[-1] if stack else "stack not recorded"


def blocked_loop(snap: LiveSnapshot, threshold_ms: float = 100.0) -> list[Finding]:
    findings = []
    for step in snap.slow_steps:
        ms = step.duration_ns / 1e6
        if ms < threshold_ms:
            continue
        where = user_frame(step.stack)
        # task 0: a plain callback (data_received, call_soon), not a task step
        subject = _label(step.task_id, step.task_name, step.coro) if step.task_id else "a callback"
        findings.append(Finding(
            "blocked-loop", "error", subject,
            f"a step took {ms:.0f} ms and blocked the loop (threshold {threshold_ms:.0f} ms), "
            f"at {where}",
            list(step.stack)))
    return findings


def never_yielded(snap: LiveSnapshot, threshold_ms: float = 1000.0) -> list[Finding]:
    return [
        Finding("never-yielded", "error", _task_label(t),
                f"has been running for {t.running_for_ns / 1e9:.1f} s without yielding "
                f"(threshold {threshold_ms / 1e3:.1f} s)",
                [f"created at {t.location}"] if t.location else [])
        for t in snap.tasks
        if t.state == "running" and t.running_for_ns / 1e6 >= threshold_ms
    ]


def self_wakes(snap: LiveSnapshot, share: float = 0.5, min_polls: int = 10) -> list[Finding]:
    findings = []
    for t in snap.tasks:
        wakes = t.wakes + t.self_wakes
        if t.polls < min_polls or wakes == 0 or t.self_wakes / wakes <= share:
            continue
        findings.append(Finding(
            "self-wakes", "warning", _task_label(t),
            f"woke itself in {t.self_wakes} of {wakes} steps ({100 * t.self_wakes / wakes:.0f}%): "
            f"it busy-polls instead of awaiting what it needs",
            [f"created at {t.location}"] if t.location else []))
    return findings


def pending_forever(snap: LiveSnapshot, threshold_s: float = 60.0) -> list[Finding]:
    findings = []
    for t in snap.tasks:
        if t.state != "idle":
            continue
        since = t.last_step_end_ns or (snap.taken_ns - t.age_ns)
        waited = (snap.taken_ns - since) / 1e9
        if waited < threshold_s:
            continue
        what = t.awaiting or "something unknown"
        findings.append(Finding(
            "pending-forever", "warning", _task_label(t),
            f"has waited {waited:.0f} s on {what} without being woken (threshold {threshold_s:.0f} s)",
            list(t.await_chain) or ([f"created at {t.location}"] if t.location else [])))
    return findings


def never_awaited(snap: LiveSnapshot) -> list[Finding]:
    return [
        Finding("never-awaited", "error", f"coroutine {n.coro}",
                f"coroutine {n.coro} was never awaited" + (f" (created at {n.location})" if n.location else ""),
                [n.location] if n.location else [])
        for n in snap.never_awaited
    ]


def fd_leak(snap: LiveSnapshot, window: int = 30, min_growth: int = 5) -> list[Finding]:
    """A kind that climbed across the last ``window`` samples without falling, by ``min_growth``.

    The rule is ``diag.fds.trend.FdTrend``'s (one definition of "leak" for the whole project:
    a pool that breathes is not one); this lint applies it to the snapshot's trend and adds the
    opening stacks of the newest fds of that kind."""
    from diag.fds.trend import FdTrend

    trends = snap.fds.trend
    samples = max((len(t) for t in trends.values()), default=0)
    if samples < window:
        return []
    detector = FdTrend(window=window, min_growth=min_growth, keep=window)
    for i in range(samples - window, samples):
        detector.add({kind: t[i] for kind, t in trends.items() if i < len(t)}, t=float(i))
    findings = []
    for warning in detector.warnings():
        kind = warning.kind
        newest = sorted((r for r in snap.fds.open if r.kind == kind),
                        key=lambda r: (r.opened_at_ns, r.fd))[-3:]
        evidence = []
        for row in reversed(newest):
            opened = user_frame(row.stack) if row.stack else "opening stack unknown"
            evidence.append(f"fd {row.fd}: opened at {opened}")
        recent = trends[kind][-window:]
        findings.append(Finding(
            "fd-leak", "error", f"fd kind {kind}",
            f"{kind} fds grew from {recent[0]} to {recent[-1]} over the last {window} samples "
            f"and never came down",
            evidence))
    return findings


@dataclass(frozen=True)
class Lint:
    name: str
    summary: str
    check: Callable[..., list[Finding]]


LINTS: dict[str, Lint] = {lint.name: lint for lint in (
    Lint("blocked-loop", "a step ran long enough to block the loop", blocked_loop),
    Lint("never-yielded", "a step has been running for a long time without yielding", never_yielded),
    Lint("self-wakes", "a task woke itself in over half of its steps", self_wakes),
    Lint("pending-forever", "a task has waited a long time without being woken", pending_forever),
    Lint("never-awaited", "a coroutine was never awaited", never_awaited),
    Lint("fd-leak", "an fd kind grows and never comes down", fd_leak),
)}


def check(snap: LiveSnapshot, only: list[str] | None = None,
          thresholds: dict[str, dict] | None = None) -> list[Finding]:
    """Run the lints named in ``only`` (all by default) with per-lint threshold overrides."""
    names = list(LINTS) if only is None else only
    unknown = [n for n in names if n not in LINTS]
    if unknown:
        raise ValueError(f"unknown lint(s): {', '.join(unknown)}; known: {', '.join(LINTS)}")
    findings: list[Finding] = []
    for name in names:
        findings.extend(LINTS[name].check(snap, **(thresholds or {}).get(name, {})))
    return findings
