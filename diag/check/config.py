"""Reading coroscope.toml: scenarios, their loads and their budgets.

    [check]
    baseline = "coroscope-baseline.json"     # relative to the config file
    markdown = "out/check-summary.md"
    junit = "out/check-junit.xml"
    [check.vars]                              # {name} placeholders in commands; --var overrides
    service = "examples.http_service"

    [[scenario]]
    name = "http-asyncio"
    command = ["{python}", "-m", "{service}", "--port", "0"]
    loop = "asyncio"              # COROSCOPE_LOOP for the target
    requests = 200                # exact request count in the syscall window (1 connection)
    cycles = 4                    # leak cycles: connect, cycle_requests each, close
    [scenario.budgets]
    syscalls_per_request = "baseline"   # or a table {epoll_wait = 1, ...}, or false
    leaked_fds_per_cycle = 0            # each leak budget: a number, or false for none
    leaked_tasks_per_cycle = 0          # needs trace = true: counted from the probe file
    leaked_threads_per_cycle = 0
    trace = true                  # tracepoints on: loop warnings (diag.warnings) and live
                                  # tasks per cycle, both from the probe file
    warnings = ["blocked-loop", "never-yielded"]

    [[ratio]]                     # timing: metric of scenario / metric of reference, same job
    name = "runtime-vs-asyncio"
    scenario = "http-runtime"
    reference = "http-asyncio"
    metric = "requests_per_s"
    min = 0.9
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from diag.errors import CoroscopeError

def _warning_kinds() -> tuple[str, ...]:
    """The lint names of diag.warnings (what the dashboard shows), known without running them."""
    try:
        from diag.warnings import LINTS
        return tuple(LINTS)
    except ImportError:
        return ("blocked-loop",)


WARNING_KINDS = _warning_kinds()
DEFAULT_WARNINGS = ["blocked-loop", "never-yielded"]


@dataclass
class Scenario:
    name: str
    command: list[str]
    loop: str | None = None
    warmup: int = 50                  # requests before the syscall window (first-use costs)
    requests: int = 200               # requests inside the syscall window, one connection
    cycles: int = 4                   # >= 2 to measure leaks per cycle
    cycle_connections: int = 1
    cycle_requests: int = 10
    throughput_seconds: float = 0.0   # > 0: a timed phase giving requests_per_s for ratios
    throughput_connections: int = 8
    blocked_loop_ms: float = 150.0    # client-latency fallback threshold for "blocked-loop"
    syscalls: str | dict[str, float] | bool = "baseline"
    leaked_fds_per_cycle: float | None = 0
    leaked_tasks_per_cycle: float | None = 0    # live asyncio tasks, from the probe (trace = true)
    leaked_threads_per_cycle: float | None = 0
    warnings: list[str] = field(default_factory=lambda: list(DEFAULT_WARNINGS))
    trace: bool = False               # tracepoints on (COROSCOPE_TRACE=1): warnings and task counts
                                      # from the probe


@dataclass
class Ratio:
    name: str
    scenario: str
    reference: str
    metric: str = "requests_per_s"
    min: float = 0.0


@dataclass
class CheckConfig:
    path: Path
    baseline: Path
    markdown: Path
    junit: Path
    variables: dict[str, str]
    scenarios: list[Scenario]
    ratios: list[Ratio]


_SCENARIO_KEYS = {"name", "command", "loop", "warmup", "requests", "cycles", "cycle_connections",
                  "cycle_requests", "throughput_seconds", "throughput_connections",
                  "blocked_loop_ms", "budgets", "trace"}
_BUDGET_KEYS = {"syscalls_per_request", "leaked_fds_per_cycle", "leaked_tasks_per_cycle",
                "leaked_threads_per_cycle", "warnings"}


def _fail(path: Path, what: str) -> CoroscopeError:
    return CoroscopeError(f"{path}: {what}")


def _leak_budget(budgets: dict, key: str) -> float | None:
    """A leak budget: a number (0 by default), or ``false`` for no budget at all."""
    value = budgets.get(key, 0)
    return None if value is False else value


def load_config(path: str | Path, overrides: dict[str, str] | None = None) -> CheckConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CoroscopeError(f"no such config file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise _fail(path, f"not valid TOML: {exc}") from None
    base = path.resolve().parent
    check = data.get("check", {})
    variables = {str(k): str(v) for k, v in check.get("vars", {}).items()}
    variables.update(overrides or {})

    scenarios = []
    for i, raw in enumerate(data.get("scenario", [])):
        unknown = set(raw) - _SCENARIO_KEYS
        if unknown:
            raise _fail(path, f"scenario {i + 1}: unknown key(s) {', '.join(sorted(unknown))}")
        if "name" not in raw or "command" not in raw:
            raise _fail(path, f"scenario {i + 1}: needs a name and a command")
        command = raw["command"]
        if isinstance(command, str):
            command = command.split()
        budgets = raw.get("budgets", {})
        unknown = set(budgets) - _BUDGET_KEYS
        if unknown:
            raise _fail(path, f"scenario {raw['name']}: unknown budget(s) {', '.join(sorted(unknown))}")
        warnings = budgets.get("warnings", list(DEFAULT_WARNINGS))
        bad = [w for w in warnings if w not in WARNING_KINDS]
        if bad:
            raise _fail(path, f"scenario {raw['name']}: unknown warning kind(s) {', '.join(bad)} "
                              f"(known: {', '.join(WARNING_KINDS)})")
        fields = {k: raw[k] for k in _SCENARIO_KEYS - {"budgets", "command"} if k in raw}
        scenario = Scenario(command=[str(c) for c in command], **fields,
                            syscalls=budgets.get("syscalls_per_request", "baseline"),
                            leaked_fds_per_cycle=_leak_budget(budgets, "leaked_fds_per_cycle"),
                            leaked_threads_per_cycle=_leak_budget(budgets, "leaked_threads_per_cycle"),
                            leaked_tasks_per_cycle=_leak_budget(budgets, "leaked_tasks_per_cycle"),
                            warnings=list(warnings))
        if scenario.cycles < 2 and any(limit is not None for limit in (
                scenario.leaked_fds_per_cycle, scenario.leaked_tasks_per_cycle,
                scenario.leaked_threads_per_cycle)):
            raise _fail(path, f"scenario {scenario.name}: leak budgets need cycles >= 2")
        scenarios.append(scenario)
    if not scenarios:
        raise _fail(path, "no [[scenario]] defined")
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        raise _fail(path, "scenario names must be unique")

    ratios = []
    for raw in data.get("ratio", []):
        try:
            ratio = Ratio(**raw)
        except TypeError as exc:
            raise _fail(path, f"ratio: {exc}") from None
        for ref in (ratio.scenario, ratio.reference):
            if ref not in names:
                raise _fail(path, f"ratio {ratio.name}: no scenario named {ref!r}")
        ratios.append(ratio)

    return CheckConfig(
        path=path,
        baseline=base / check.get("baseline", "coroscope-baseline.json"),
        markdown=base / check.get("markdown", "out/check-summary.md"),
        junit=base / check.get("junit", "out/check-junit.xml"),
        variables=variables,
        scenarios=scenarios,
        ratios=ratios,
    )
