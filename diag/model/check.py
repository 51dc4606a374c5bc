"""The check report: what each scenario measured, and each budget's verdict.

Filled by ``diag.check.runner`` (measurements) and ``diag.check.budgets`` (verdicts); the
terminal lines, the Markdown summary and the JUnit XML all render this one model.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoopWarning:
    kind: str        # "blocked-loop", "slow-step", "scheduling-lag", ...
    message: str     # one line, with the number that triggered it
    source: str      # what saw it: "probe" (the loop's own tracepoints) or "client-latency"


@dataclass
class Measurement:
    scenario: str
    command: list[str]
    loop: str | None
    # syscalls: process-wide counts over exactly `requests` requests on warm connections
    requests: int
    syscalls_backend: str | None                  # None when syscalls were not counted
    syscalls_per_request: dict[str, float] | None  # name -> calls / requests, sorted by name
    # leaks: counts read from /proc after each cycle once they stopped moving
    cycles: int
    fds_after_cycle: list[int]
    threads_after_cycle: list[int]
    leaked_fds_per_cycle: float | None            # (last - first) / (cycles - 1); None: < 2 cycles
    leaked_threads_per_cycle: float | None
    warnings: list[LoopWarning]
    warnings_backend: str
    max_latency_ms: float | None                  # over every request the scenario sent
    requests_per_s: float | None                  # the throughput phase, when the scenario has one
    notes: list[str] = field(default_factory=list)  # measurements not available, and why
    complete: bool = True                         # False when the target died mid-scenario
    # tasks: the probe file's live-task count after each cycle (same cycles as fds and threads);
    # empty, with tasks_not_measured saying why, when the target publishes no countable probe
    tasks_after_cycle: list[int] = field(default_factory=list)
    leaked_tasks_per_cycle: float | None = None   # (last - first) / (cycles - 1); None: not measured
    tasks_not_measured: str | None = None         # one line: why there is no task count
    leaked_task_survivors: list[str] = field(default_factory=list)  # "N x coro (created at f:l)"


@dataclass
class BudgetResult:
    scenario: str
    budget: str       # "syscalls_per_request", "leaked_fds_per_cycle", "leaked_tasks_per_cycle",
                      # "leaked_threads_per_cycle", "warnings", "ratio:<name>", ...
    status: str       # "pass", "fail" or "skip"
    message: str      # one line: for a failure, what regressed, by how much, and against what
    details: list[str] = field(default_factory=list)  # one line per differing item (per syscall name)


@dataclass
class CheckReport:
    config: str
    baseline: str | None
    baseline_updated: bool
    measurements: list[Measurement]
    results: list[BudgetResult]

    @property
    def failures(self) -> list[BudgetResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failures
