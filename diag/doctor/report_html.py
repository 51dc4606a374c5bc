"""The doctor's HTML report: one self-contained file, no network, readable offline.

Everything is inline: styles, the plots (SVG drawn here from the report's series), and the
flame graphs (the flame module's SVG, each in an ``iframe srcdoc`` so its script and its
element ids stay its own; two flame graphs in one document would otherwise fight over ids).
The page layout lives in ``report_template.html`` next to this module.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from string import Template

from diag.model.doctor import DoctorReport, Run, TimePoint

TEMPLATE = Path(__file__).with_name("report_template.html")
PALETTE = ("#2e86c1", "#c0392b", "#27ae60", "#8e44ad", "#d68910")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _num(value, fmt="{:,.2f}") -> str:
    return "–" if value is None else fmt.format(value)


# ------------------------------------------------------------------------------ plots

def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def line_plot(series: dict[str, list[TimePoint]], title: str, unit: str, plot_id: str,
              width: int = 560, height: int = 230) -> str:
    """An SVG line chart: one path per series over a shared time axis, with axes and legend."""
    left, right, top, bottom = 56, 14, 28, 34
    w, h = width - left - right, height - top - bottom
    points = [p for pts in series.values() for p in pts]
    out = [f'<svg class="cs-plot" id="{_e(plot_id)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" role="img" '
           f'aria-label="{_e(title)}">',
           f'<text x="{left}" y="16" style="font-size:13px;font-weight:bold;fill:#1d2330">{_e(title)}</text>']
    if not points:
        out.append(f'<text x="{left + 10}" y="{top + h / 2}">no samples</text></svg>')
        return "".join(out)
    t_max = max(p.t for p in points) or 1.0
    v_max = _nice_max(max(p.value for p in points))
    x = lambda t: left + w * t / t_max  # noqa: E731
    y = lambda v: top + h - h * v / v_max  # noqa: E731
    out.append(f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="#fbfcfd" stroke="#dde1e8"/>')
    for i in range(5):
        v = v_max * i / 4
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eef0f4"/>'
                   f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for i in range(6):
        t = t_max * i / 5
        out.append(f'<text x="{x(t):.1f}" y="{top + h + 16}" text-anchor="middle">{t:.1f}</text>')
    out.append(f'<text x="{left + w / 2}" y="{height - 2}" text-anchor="middle">seconds</text>'
               f'<text x="12" y="{top + h / 2}" transform="rotate(-90 12 {top + h / 2})" '
               f'text-anchor="middle">{_e(unit)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        if not pts:
            continue
        color = PALETTE[i % len(PALETTE)]
        d = "M" + " L".join(f"{x(p.t):.1f},{y(p.value):.1f}" for p in sorted(pts, key=lambda p: p.t))
        out.append(f'<path class="series" data-series="{_e(name)}" d="{d}" fill="none" '
                   f'stroke="{color}" stroke-width="1.6"/>')
        lx = left + 10 + 160 * (i % 3)
        ly = top + 10 + 14 * (i // 3)
        out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{ly}" y2="{ly}" stroke="{color}" '
                   f'stroke-width="3"/><text x="{lx + 22}" y="{ly + 4}">{_e(name)}</text>')
    out.append("</svg>")
    return "".join(out)


# ----------------------------------------------------------------------------- sections

def _findings(report: DoctorReport) -> str:
    if not report.findings:
        return "<section><h2>Findings</h2><p>Nothing wrong was found.</p></section>"
    rows = []
    for i, f in enumerate(report.findings, 1):
        evidence = "".join(f"<li>{_e(line)}</li>" for line in f.evidence)
        advice = f'<div class="advice">{_e(f.advice)}</div>' if f.advice else ""
        rows.append(f'<tr class="finding"><td class="num">{i}</td>'
                    f'<td><span class="sev sev-{_e(f.severity)}">{_e(f.severity)}</span></td>'
                    f'<td>{_e(f.run)}</td><td><b>{_e(f.title)}</b>'
                    f'<ul class="evidence">{evidence}</ul>{advice}</td></tr>')
    return ('<section id="findings"><h2>Findings, by impact</h2><table><tr><th>#</th><th>severity</th>'
            '<th>run</th><th>finding and evidence</th></tr>' + "".join(rows) + "</table></section>")


def _summary_table(runs: list[Run]) -> str:
    def row(label, cells):
        return f"<tr><th>{_e(label)}</th>" + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>"

    head = "<tr><th></th>" + "".join(f"<th>{_e(r.label)}</th>" for r in runs) + "</tr>"
    lat = [r.latency for r in runs]
    body = [
        row("load", [_e(f"{l.source}, {l.connections} conns, {l.duration_s:g} s") if l else "–" for l in lat]),
        row("requests/s", [_num(l.requests_per_s if l else None, "{:,.0f}") for l in lat]),
        row("p50 latency ms", [_num(l.p50_ms if l else None) for l in lat]),
        row("p90 latency ms", [_num(l.p90_ms if l else None) for l in lat]),
        row("p99 latency ms", [_num(l.p99_ms if l else None) for l in lat]),
        row("failed requests", [_num(l.errors if l else None, "{:,}") for l in lat]),
        row("syscalls per request", [_num(sum(r.syscalls_per_request.values()) if r.syscalls_per_request else None, "{:g}") for r in runs]),
        row("fds leaked per cycle", [_num(r.leaked_fds_per_cycle, "{:g}") for r in runs]),
        row("fds after each cycle", [_e(", ".join(map(str, r.fds_after_cycle))) or "–" for r in runs]),
        row("tasks leaked per cycle", [_num(r.leaked_tasks_per_cycle, "{:g}") for r in runs]),
        row("live tasks after each cycle", [_e(", ".join(map(str, r.tasks_after_cycle))) or "–" for r in runs]),
        row("slow steps (probe)", [str(r.slow_steps) for r in runs]),
        row("loop warnings", [str(len(r.warnings)) for r in runs]),
        row("scheduling lag p99 ms (worst second)",
            [_num(r.scheduling_lag_ms.get("p99_worst_s") if r.scheduling_lag_ms else None) for r in runs]),
    ]
    return ('<section id="summary"><h2>Side by side</h2><table>' + head + "".join(body) +
            "</table></section>")


def _syscall_table(runs: list[Run]) -> str:
    names = sorted({n for r in runs for n in (r.syscalls_per_request or {})})
    if not names:
        notes = "".join(f'<p class="note">{_e(r.label)}: {_e(n)}</p>' for r in runs for n in r.notes
                        if n.startswith("syscalls"))
        return f'<section id="syscalls"><h2>Syscalls per request</h2>{notes or "<p>not measured</p>"}</section>'
    head = "<tr><th>syscall</th>" + "".join(f"<th>{_e(r.label)}</th>" for r in runs) + "</tr>"
    rows = []
    for name in names:
        rows.append(f"<tr><td><code>{_e(name)}</code></td>" + "".join(
            f'<td class="num">{_num((r.syscalls_per_request or {}).get(name, 0), "{:g}")}</td>'
            for r in runs) + "</tr>")
    backends = ", ".join(sorted({r.syscalls_backend for r in runs if r.syscalls_backend}))
    return (f'<section id="syscalls"><h2>Syscalls per request</h2><p>exact: {WINDOW} requests on a '
            f'warm keep-alive connection, counted by {_e(backends)}</p><table>{head}{"".join(rows)}'
            f"</table></section>")


WINDOW = 200


def _plots(runs: list[Run]) -> str:
    latency = {}
    for r in runs:
        latency[f"{r.label} p50"] = r.latency_p50_ms
        latency[f"{r.label} p99"] = r.latency_p99_ms
    fds = {r.label: r.fds for r in runs}
    return ('<section id="plots"><h2>Over time</h2><div class="plots">'
            + line_plot(latency, "Latency (built-in client, 100 ms buckets)", "ms", "plot-latency")
            + line_plot(fds, "Open fds (/proc/PID/fd, every 100 ms)", "fds", "plot-fds")
            + "</div></section>")


def _flame_frame(svg: str, frame_id: str) -> str:
    match = re.search(r'height="(\d+)"', svg)
    height = int(match.group(1)) + 8 if match else 400
    body = svg.split("?>", 1)[1] if svg.startswith("<?xml") else svg
    doc = ('<!doctype html><html><head><meta charset="utf-8"><style>body{margin:0}</style></head>'
           f"<body>{body}</body></html>")
    return (f'<iframe class="flame" id="{_e(frame_id)}" sandbox="allow-scripts" height="{height}" '
            f'srcdoc="{_e(doc)}"></iframe>')


def _flames(runs: list[Run]) -> str:
    parts = ['<section id="flames"><h2>Flame graphs</h2><p>Click a frame to zoom; hover for '
             'its share. On-CPU: where the CPU went. Await: what pending tasks were waiting on.</p>']
    for r in runs:
        for f in r.flames:
            title = f"{r.label}: {'on-CPU' if f.mode == 'cpu' else 'awaiting'} ({f.backend}, {f.samples:,.0f} samples)"
            parts.append(f"<h3>{_e(title)}</h3>")
            if f.svg:
                parts.append(_flame_frame(f.svg, f"flame-{r.label}-{f.mode}"))
            else:
                parts.append(f'<p class="note">not available: {_e(f.note)}</p>')
        for n in r.notes:
            if "flame" in n:
                parts.append(f'<p class="note">{_e(r.label)}: {_e(n)}</p>')
    parts.append("</section>")
    return "".join(parts)


def _runs(runs: list[Run]) -> str:
    cards = []
    for r in runs:
        warnings = "".join(f"<li><b>{_e(k)}</b> ({_e(s)}): {_e(m)}</li>" for k, m, s in r.warnings)
        notes = "".join(f'<li class="note">{_e(n)}</li>' for n in r.notes)
        cards.append(f'<div><h3>{_e(r.label)}</h3><p><code>{_e(" ".join(r.command))}</code> '
                     f'(loop {_e(r.loop or "default")}, pid {r.pid})</p>'
                     f'{"<ul>" + warnings + "</ul>" if warnings else "<p>no loop warnings</p>"}'
                     f'{"<ul>" + notes + "</ul>" if notes else ""}</div>')
    return '<section id="runs"><h2>Runs</h2><div class="runs">' + "".join(cards) + "</div></section>"


def render(report: DoctorReport) -> str:
    content = "".join([_findings(report), _summary_table(report.runs), _plots(report.runs),
                       _flames(report.runs), _syscall_table(report.runs), _runs(report.runs)])
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        title=_e(f"coroscope doctor: {report.target}"),
        subtitle=_e(f"{report.created} · load {report.load} · {report.duration_s:g} s per run · "
                    f"{len(report.runs)} run(s): {', '.join(r.label for r in report.runs)}"),
        content=content)
