"""Verdicts: each budget of each scenario against what was measured (pure functions, no I/O)."""
from __future__ import annotations

from diag.model.check import BudgetResult, Measurement

from .config import Ratio, Scenario


def _fmt(x: float) -> str:
    return f"{x:g}"


def compare_syscalls(expected: dict[str, float], measured: dict[str, float]) -> list[str]:
    """One line per syscall name whose calls per request differ (exact comparison)."""
    lines = []
    for name in sorted(set(expected) | set(measured)):
        before, after = expected.get(name, 0), measured.get(name, 0)
        if round(after - before, 3) != 0:
            lines.append(f"{name}: {_fmt(before)} -> {_fmt(after)} per request "
                         f"({'+' if after > before else ''}{_fmt(round(after - before, 3))})")
    return lines


def _summarize_warnings(seen) -> list[str]:
    """One entry per (kind, source): the first message and how many more there were."""
    groups: dict[tuple[str, str], list[str]] = {}
    for w in seen:
        groups.setdefault((w.kind, w.source), []).append(w.message)
    out = []
    for (kind, source), messages in groups.items():
        more = f" (x{len(messages)})" if len(messages) > 1 else ""
        out.append(f"{kind}{more} [{source}]: {messages[0]}")
    return out


def evaluate(scenario: Scenario, m: Measurement, baseline: dict | None) -> list[BudgetResult]:
    results = []

    def add(budget, status, message, details=()):
        results.append(BudgetResult(scenario.name, budget, status, message, list(details)))

    if not m.complete:
        add("service", "fail", "the service did not run the scenario through: " + "; ".join(m.notes))
        if not m.cycles and m.syscalls_per_request is None:
            return results  # nothing was measured: one failure says it all

    # syscalls per request, by name, exact
    if scenario.syscalls is not False:
        if m.syscalls_per_request is None:
            add("syscalls_per_request", "skip", "; ".join(m.notes) or "syscalls not counted")
        else:
            if isinstance(scenario.syscalls, dict):
                expected, against = {k: float(v) for k, v in scenario.syscalls.items()}, "the config"
            else:
                entry = (baseline or {}).get(scenario.name)
                expected = None if entry is None else entry.get("syscalls_per_request")
                against = "the baseline"
            if expected is None:
                add("syscalls_per_request", "fail",
                    f"no baseline for scenario {scenario.name}: record one with --update-baseline")
            else:
                diff = compare_syscalls(expected, m.syscalls_per_request)
                total_before = sum(expected.values())
                total_after = sum(m.syscalls_per_request.values())
                if diff:
                    add("syscalls_per_request", "fail",
                        f"syscalls per request changed: {_fmt(round(total_before, 3))} -> "
                        f"{_fmt(round(total_after, 3))} against {against} ({'; '.join(diff)})", diff)
                else:
                    add("syscalls_per_request", "pass",
                        f"{_fmt(round(total_after, 3))} syscalls per request, as in {against}")

    for budget, value, unit, series, why_not, evidence in (
            ("leaked_fds_per_cycle", m.leaked_fds_per_cycle, "fds", m.fds_after_cycle, None, []),
            ("leaked_tasks_per_cycle", m.leaked_tasks_per_cycle, "tasks", m.tasks_after_cycle,
             m.tasks_not_measured, m.leaked_task_survivors),
            ("leaked_threads_per_cycle", m.leaked_threads_per_cycle, "threads", m.threads_after_cycle,
             None, [])):
        limit = getattr(scenario, budget)
        if limit is None:
            continue
        if value is None:
            add(budget, "skip", f"{unit} per cycle not measured: "
                                f"{why_not or 'fewer than 2 cycles ran'}")
        elif value > limit:
            still = f"; still pending: {'; '.join(evidence)}" if evidence else ""
            add(budget, "fail", f"{unit} leaked: {_fmt(round(value, 3))} per cycle over "
                                f"{len(series)} cycles (budget {_fmt(limit)}; after each cycle: "
                                f"{', '.join(map(str, series))}){still}", evidence)
        else:
            add(budget, "pass", f"{_fmt(round(value, 3))} {unit} per cycle (budget {_fmt(limit)})")

    if scenario.warnings:
        seen = [w for w in m.warnings if w.kind in scenario.warnings]
        if seen:
            add("warnings", "fail", "loop warnings: " + "; ".join(_summarize_warnings(seen)),
                [f"{w.kind} ({w.source}): {w.message}" for w in seen])
        else:
            add("warnings", "pass", f"none of {', '.join(scenario.warnings)} (seen by {m.warnings_backend})")
    return results


def evaluate_ratio(ratio: Ratio, measurements: dict[str, Measurement]) -> BudgetResult:
    a = getattr(measurements[ratio.scenario], ratio.metric, None)
    b = getattr(measurements[ratio.reference], ratio.metric, None)
    budget = f"ratio:{ratio.name}"
    if not a or not b:
        return BudgetResult(ratio.scenario, budget, "skip",
                            f"{ratio.metric} not measured for {ratio.scenario} or {ratio.reference}")
    value = a / b
    status = "pass" if value >= ratio.min else "fail"
    return BudgetResult(ratio.scenario, budget, status,
                        f"{ratio.metric} {ratio.scenario}/{ratio.reference} = {value:.2f} "
                        f"(budget >= {ratio.min:g})")
