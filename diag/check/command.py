"""``coroscope check``: run the scenarios of coroscope.toml, judge their budgets, exit 1 on a regression."""
from __future__ import annotations

import sys
from pathlib import Path

from diag.errors import CoroscopeError
from diag.model.base import write_text_atomic
from diag.model.check import CheckReport

from .baseline import load_baseline, write_baseline
from .budgets import evaluate, evaluate_ratio
from .config import load_config
from .render import junit_xml, markdown, terminal_lines
from .runner import failed_measurement, run_scenario


def configure(parser) -> None:
    parser.add_argument("--config", default="coroscope.toml", help="scenarios and budgets (TOML)")
    parser.add_argument("--baseline", help="baseline JSON (default: the config's check.baseline)")
    parser.add_argument("--update-baseline", action="store_true",
                        help="record this run's syscalls per request as the new baseline")
    parser.add_argument("--scenario", action="append", default=[],
                        help="run only this scenario (repeatable)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="set a {NAME} placeholder of the commands, e.g. "
                             "service=examples.regressions.fd_leak")
    parser.add_argument("--markdown", help="where to write the Markdown summary")
    parser.add_argument("--junit", help="where to write the JUnit XML")


def _parse_vars(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CoroscopeError(f"--var wants NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def run_check(config_path, baseline_path=None, update_baseline=False, only=(), variables=None,
              markdown_path=None, junit_path=None, progress=lambda line: None) -> CheckReport:
    config = load_config(config_path, variables)
    baseline_file = Path(baseline_path) if baseline_path else config.baseline
    try:
        baseline = load_baseline(baseline_file)  # a corrupt file stops us before any measuring
    except CoroscopeError as exc:
        if not update_baseline:
            raise
        progress(f"{exc}: it will be replaced")  # rewriting it is what was asked for
        baseline = None
    scenarios = [s for s in config.scenarios if not only or s.name in only]
    missing = set(only) - {s.name for s in config.scenarios}
    if missing:
        raise CoroscopeError(f"no scenario named {', '.join(sorted(missing))} in {config.path}")
    measurements = []
    for scenario in scenarios:
        progress(f"running {scenario.name}: {' '.join(scenario.command)}")
        try:
            measurements.append(run_scenario(scenario, config.variables,
                                             want_syscalls=scenario.syscalls is not False,
                                             progress=progress))
        except CoroscopeError as exc:  # the service would not start: a failed scenario, go on
            measurements.append(failed_measurement(scenario, config.variables, str(exc)))
    if update_baseline:
        write_baseline(baseline_file, measurements, baseline)
        baseline = load_baseline(baseline_file)
    results = []
    for scenario, m in zip(scenarios, measurements):
        results += evaluate(scenario, m, baseline)
    by_name = {m.scenario: m for m in measurements}
    for ratio in config.ratios:
        if ratio.scenario in by_name and ratio.reference in by_name:
            results.append(evaluate_ratio(ratio, by_name))
    report = CheckReport(str(config.path), str(baseline_file), update_baseline, measurements, results)
    for path, text in ((markdown_path or config.markdown, markdown(report)),
                       (junit_path or config.junit, junit_xml(report))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    return report


def main(args) -> int:
    report = run_check(args.config, args.baseline, args.update_baseline, args.scenario,
                       _parse_vars(args.var), args.markdown, args.junit,
                       progress=lambda line: print(f"... {line}", file=sys.stderr, flush=True))
    for line in terminal_lines(report):
        print(line)
    return 0 if report.passed else 1
