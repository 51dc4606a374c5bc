"""The check report as terminal lines, a Markdown summary (a pull-request comment) and JUnit XML."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from diag.model.check import CheckReport

_MARK = {"pass": "✅", "fail": "❌", "skip": "⚪"}


def terminal_lines(report: CheckReport) -> list[str]:
    lines = []
    for r in report.results:
        lines.append(f"{r.status.upper():4}  {r.scenario}  {r.budget}: {r.message}")
    for m in report.measurements:
        for note in m.notes:
            lines.append(f"note  {m.scenario}: {note}")
    verdict = "PASSED" if report.passed else f"FAILED ({len(report.failures)} regression(s))"
    if report.baseline_updated:
        verdict += f"; baseline written to {report.baseline}"
    lines.append(f"coroscope check: {verdict}")
    return lines


def markdown(report: CheckReport) -> str:
    head = "passed" if report.passed else f"**{len(report.failures)} regression(s)**"
    out = [f"## coroscope check: {head}", ""]
    if report.failures:
        out.append("### Regressions")
        for r in report.failures:
            out.append(f"- **{r.scenario}** `{r.budget}`: {r.message}")
        out.append("")
    out += ["| scenario | budget | result | detail |", "|---|---|---|---|"]
    for r in report.results:
        msg = r.message.replace("|", "\\|")
        out.append(f"| {r.scenario} | `{r.budget}` | {_MARK[r.status]} {r.status} | {msg} |")
    out.append("")
    out.append("<details><summary>Measurements</summary>")
    out.append("")
    for m in report.measurements:
        out.append(f"**{m.scenario}** (`{' '.join(m.command[1:])}`, loop {m.loop or 'default'})")
        out.append("")
        if m.syscalls_per_request is not None:
            calls = ", ".join(f"{k} {v:g}" for k, v in m.syscalls_per_request.items())
            out.append(f"- syscalls per request ({m.syscalls_backend}): {calls}")
        tasks = m.tasks_after_cycle if m.tasks_not_measured is None else \
            f"not measured ({m.tasks_not_measured})"
        out.append(f"- after each cycle: fds {m.fds_after_cycle}; tasks {tasks}; "
                   f"threads {m.threads_after_cycle}")
        if m.max_latency_ms is not None:
            out.append(f"- slowest request: {m.max_latency_ms:.1f} ms")
        if m.requests_per_s:
            out.append(f"- throughput: {m.requests_per_s:.0f} requests/s")
        for note in m.notes:
            out.append(f"- note: {note}")
        out.append("")
    out.append("</details>")
    if report.baseline:
        out.append("")
        out.append(f"Baseline: `{report.baseline}`" + (" (updated)" if report.baseline_updated else ""))
    return "\n".join(out) + "\n"


def junit_xml(report: CheckReport) -> str:
    suite = ET.Element("testsuite", name="coroscope-check", tests=str(len(report.results)),
                       failures=str(len(report.failures)),
                       skipped=str(sum(r.status == "skip" for r in report.results)))
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"coroscope.{r.scenario}", name=r.budget)
        if r.status == "fail":
            failure = ET.SubElement(case, "failure", message=r.message)
            failure.text = "\n".join(r.details or [r.message])
        elif r.status == "skip":
            ET.SubElement(case, "skipped", message=r.message)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
