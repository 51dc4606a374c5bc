"""Writing and reading profiles: collapsed stacks, speedscope JSON, and the interactive SVG/HTML.

- collapsed: Brendan Gregg's format, one ``frame;frame;frame weight`` line per stack, so
  flamegraph.pl, inferno, speedscope and friends all read it.
- speedscope: the "sampled" profile of speedscope's file format (checked against the schema in
  tests/data); with ``--by`` one extra profile per root, so each task/request is its own tab.
- pprof: a gzipped profile.proto with sample labels, for go tool pprof, Pyroscope, Parca
  (``diag.flame.pprof``, encoded with the protobuf library).
- svg / html: a flame graph drawn here, self-contained (no network): a click on a frame zooms
  to it, the search box highlights matching frames and sums their share, hovering shows the
  weight and share. The numbers are laid out in Python (the model's weights); the script only
  moves rectangles.
"""
from __future__ import annotations

import hashlib
import html
import json

from diag.model.flame import FlameProfile, StackCount, split_frame

from . import pprof

SPEEDSCOPE_SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"
FORMATS = ("svg", "html", "speedscope", "collapsed", "json", "pprof")


class FormatError(ValueError):
    pass


# ---------------------------------------------------------------- collapsed

def to_collapsed(profile: FlameProfile) -> str:
    lines = []
    for s in profile.stacks:
        weight = int(round(s.weight))
        if weight > 0:
            lines.append(f"{';'.join(s.frames)} {weight}")
    return "\n".join(lines) + ("\n" if lines else "")


def parse_collapsed(text: str, origin: str = "input") -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        stack, sep, count = line.rpartition(" ")
        try:
            weight = float(count)
        except ValueError:
            weight = None
        if not sep or not stack or weight is None:
            raise FormatError(f"{origin}:{lineno}: not a collapsed-stack line "
                              f"(expected 'frame;frame count')")
        key = tuple(stack.split(";"))
        out[key] = out.get(key, 0.0) + weight
    return out


# ---------------------------------------------------------------- speedscope

def to_speedscope(profile: FlameProfile, name: str = "coroscope") -> dict:
    frames: list[dict] = []
    index: dict[str, int] = {}

    def frame_id(label: str) -> int:
        i = index.get(label)
        if i is None:
            i = index[label] = len(frames)
            func, path, line = split_frame(label)
            entry: dict = {"name": func}
            if path is not None:
                entry["file"] = path
                entry["line"] = line
            frames.append(entry)
        return i

    unit = "microseconds" if profile.unit == "microseconds" else "none"

    def sampled(title: str, stacks: list[StackCount]) -> dict:
        samples = [[frame_id(f) for f in s.frames] for s in stacks]
        weights = [s.weight for s in stacks]
        return {"type": "sampled", "name": title, "unit": unit, "startValue": 0,
                "endValue": sum(weights), "samples": samples, "weights": weights}

    profiles = [sampled(f"{name} ({profile.mode})", profile.stacks)]
    if profile.by:
        for root, _w in profile.roots()[:50]:
            profiles.append(sampled(root, profile.under(root).stacks))
    return {"$schema": SPEEDSCOPE_SCHEMA_URL, "shared": {"frames": frames}, "profiles": profiles,
            "name": name, "activeProfileIndex": 0, "exporter": "coroscope"}


def parse_speedscope(data: dict, origin: str = "input") -> dict[tuple[str, ...], float]:
    try:
        frames = data["shared"]["frames"]
        profiles = data["profiles"]
        prof = profiles[int(data.get("activeProfileIndex", 0) or 0)]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise FormatError(f"{origin}: not a speedscope file ({exc})") from None
    if prof.get("type") != "sampled":
        raise FormatError(f"{origin}: only sampled speedscope profiles can be read")

    def label(i: int) -> str:
        fr = frames[i]
        return f"{fr['name']} ({fr['file']}:{fr.get('line', 0)})" if "file" in fr else fr["name"]

    out: dict[tuple[str, ...], float] = {}
    for stack, weight in zip(prof["samples"], prof["weights"]):
        key = tuple(label(i) for i in stack)
        if key:
            out[key] = out.get(key, 0.0) + weight
    return out


def read_stacks(path: str) -> dict[tuple[str, ...], float]:
    """Stacks from a collapsed, speedscope, coroscope-JSON or pprof file (the format is
    sniffed: pprof files are gzipped, or raw protobuf that is not UTF-8)."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or raw[:2] == pprof.GZIP_MAGIC:
        try:
            return pprof.read_stacks(raw, path)[0]
        except pprof.PprofError as exc:
            raise FormatError(str(exc)) from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{path}: corrupt JSON ({exc.msg} at line {exc.lineno})") from None
        if "stacks" in data and "mode" in data:
            return {tuple(s["frames"]): float(s["weight"]) for s in data["stacks"]}
        return parse_speedscope(data, path)
    return parse_collapsed(text, path)


# ---------------------------------------------------------------- flame graph layout

class _Node:
    __slots__ = ("name", "value", "children", "delta")

    def __init__(self, name: str):
        self.name = name
        self.value = 0.0
        self.delta = 0.0        # differential graphs: share change of this node (new - base)
        self.children: dict[str, _Node] = {}


def build_tree(stacks) -> _Node:
    root = _Node("all")
    for s in stacks:
        node = root
        node.value += s.weight
        for fr in s.frames:
            child = node.children.get(fr)
            if child is None:
                child = node.children[fr] = _Node(fr)
            child.value += s.weight
            node = child
    return root


def short_label(frame: str) -> str:
    """What fits in a box: ``f (known_shares.py:43)``; the full path stays in the tooltip."""
    func, path, line = split_frame(frame)
    if path is None:
        return frame
    return f"{func} ({path.rsplit('/', 1)[-1]}:{line})"


def _color(name: str) -> str:
    if name.startswith("["):
        if name == "[event loop]":
            return "rgb(120,170,190)"
        if name.startswith(("[task:", "[request:", "[no ")):
            return "rgb(190,190,210)"
        return "rgb(150,180,230)"        # await leaves: [future], [running]...
    digest = hashlib.md5(split_frame(name)[0].encode()).digest()
    r = 205 + digest[0] % 50
    g = 80 + digest[1] % 130
    b = digest[2] % 55
    return f"rgb({r},{g},{b})"


def _diff_color(delta: float, scale: float) -> str:
    if scale <= 0 or abs(delta) < 1e-12:
        return "rgb(235,235,235)"
    k = min(1.0, abs(delta) / scale)
    fade = int(235 - 180 * k)
    return f"rgb(235,{fade},{fade})" if delta > 0 else f"rgb({fade},{fade},235)"


_SCRIPT = r"""
(function () {
  var svg = document.getElementById('cs-flame');
  var W = +svg.getAttribute('data-width'), PAD = 10, CW = 7.0;
  var frames = Array.prototype.slice.call(svg.querySelectorAll('g.f'));
  var details = document.getElementById('cs-details'), matched = document.getElementById('cs-matched');
  var unzoomBtn = document.getElementById('cs-unzoom');
  var total = +svg.getAttribute('data-total'), unit = svg.getAttribute('data-unit');
  function fit(g, w) {
    var t = g.querySelector('text'), name = g.getAttribute('data-label');
    var n = Math.floor((w - 6) / CW);
    t.textContent = n < 3 ? '' : (name.length <= n ? name : name.slice(0, n - 2) + '..');
  }
  function place(g, x, w) {
    var r = g.querySelector('rect'), t = g.querySelector('text');
    r.setAttribute('x', x); r.setAttribute('width', Math.max(0, w)); t.setAttribute('x', x + 3);
    g.style.display = w < 0.5 ? 'none' : ''; fit(g, w);
  }
  function zoom(target) {
    var x0 = +target.getAttribute('data-x'), w0 = +target.getAttribute('data-w');
    var d0 = +target.getAttribute('data-d'), span = W - 2 * PAD, eps = 1e-9;
    frames.forEach(function (g) {
      var x = +g.getAttribute('data-x'), w = +g.getAttribute('data-w'), d = +g.getAttribute('data-d');
      if (d < d0 && x <= x0 + eps && x + w >= x0 + w0 - eps) { place(g, PAD, span); g.classList.add('parent'); }
      else if (d >= d0 && x >= x0 - eps && x + w <= x0 + w0 + eps) {
        place(g, PAD + (x - x0) / w0 * span, w / w0 * span); g.classList.remove('parent');
      } else { g.style.display = 'none'; }
    });
    unzoomBtn.style.opacity = 1; svg.setAttribute('data-zoomed', target.getAttribute('id'));
  }
  function unzoom() {
    var span = W - 2 * PAD;
    frames.forEach(function (g) {
      place(g, PAD + +g.getAttribute('data-x') * span, +g.getAttribute('data-w') * span);
      g.classList.remove('parent');
    });
    unzoomBtn.style.opacity = 0; svg.removeAttribute('data-zoomed');
  }
  function describe(g) {
    var v = +g.getAttribute('data-v'), extra = g.getAttribute('data-delta');
    var s = g.getAttribute('data-name') + ' \u2014 ' + v.toLocaleString() + ' ' + unit +
            ' (' + (100 * v / total).toFixed(2) + '%)';
    if (extra !== null) s += ', change ' + (+extra >= 0 ? '+' : '') + (+extra).toFixed(2) + ' points';
    return s;
  }
  function search(term) {
    var re = null, sum = 0, last = -1;
    if (term) { try { re = new RegExp(term); } catch (e) { re = null; } }
    var hits = [];
    frames.forEach(function (g) {
      var r = g.querySelector('rect'), name = g.getAttribute('data-name');
      var hit = term && (re ? re.test(name) : name.indexOf(term) >= 0);
      r.setAttribute('fill', hit ? 'rgb(230,0,230)' : g.getAttribute('data-fill'));
      if (hit) hits.push(g);
    });
    hits.sort(function (a, b) { return +a.getAttribute('data-x') - +b.getAttribute('data-x'); });
    hits.forEach(function (g) {   // count each x range once: nested matches do not add up twice
      var x = +g.getAttribute('data-x'), w = +g.getAttribute('data-w');
      if (x + w > last) { sum += Math.min(w, x + w - Math.max(x, last)); last = Math.max(last, x + w); }
    });
    matched.textContent = term ? ('Matched: ' + (100 * sum).toFixed(2) + '%') : '';
    svg.setAttribute('data-matched', term ? (100 * sum).toFixed(4) : '');
  }
  frames.forEach(function (g) {
    g.addEventListener('click', function (e) { zoom(g); e.stopPropagation(); });
    g.addEventListener('mouseover', function () { details.textContent = describe(g); });
    g.addEventListener('mouseout', function () { details.textContent = ' '; });
  });
  unzoomBtn.addEventListener('click', unzoom);
  var sb = document.getElementById('cs-search');
  sb.addEventListener('click', function () {
    var term = window.prompt('Search for (regular expression):', ''); if (term !== null) search(term);
  });
  var input = document.getElementById('cs-search-input');
  if (input) input.addEventListener('input', function () { search(input.value); });
  window.coroscopeFlame = {zoom: function (id) { zoom(document.getElementById(id)); },
                           unzoom: unzoom, search: search};
  unzoom();
})();
"""


def _title(profile: FlameProfile) -> str:
    what = {"cpu": "on-CPU", "wall": "wall clock", "await": "awaiting (pending tasks)"}.get(
        profile.mode, profile.mode)
    by = f", by {profile.by}" if profile.by else ""
    return f"coroscope flame graph: {what}{by} ({profile.backend}, {profile.target})"


def render_svg(profile: FlameProfile, title: str | None = None, width: int = 1200,
               min_width_px: float = 0.3, diff_deltas: dict[tuple[str, ...], float] | None = None,
               standalone: bool = True) -> str:
    """The flame graph as one SVG document (root at the bottom, like flamegraph.pl).

    ``diff_deltas`` (path -> share change in points) colours frames red (grew) / blue (shrank).
    """
    row_h, pad, top = 17, 10, 52
    root = build_tree(profile.stacks)
    total = root.value or 1.0
    span = width - 2 * pad
    rows: list[tuple[int, float, float, list[str], _Node]] = []   # depth, x, w (fractions), path

    def walk(node: _Node, depth: int, x: float, path: list[str]) -> None:
        for name in sorted(node.children):
            child = node.children[name]
            w = child.value / total
            if w * span >= min_width_px:
                p = path + [name]
                rows.append((depth, x, w, p, child))
                walk(child, depth + 1, x, p)
            x += w

    rows.append((0, 0.0, 1.0, [], root))
    walk(root, 1, 0.0, [])
    max_depth = max(d for d, *_ in rows)
    height = top + (max_depth + 1) * row_h + 40
    scale = max((abs(v) for v in (diff_deltas or {}).values()), default=0.0)
    title = title or _title(profile)
    unit = "µs CPU" if profile.unit == "microseconds" else "samples"

    out = []
    if standalone:
        out.append('<?xml version="1.0" standalone="no"?>')
    out.append(
        f'<svg version="1.1" id="cs-flame" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" '
        f'data-width="{width}" data-total="{total:g}" data-unit="{html.escape(unit)}" '
        f'data-mode="{profile.mode}">')
    out.append('<style>text{font-family:Verdana,sans-serif;font-size:12px;fill:#000}'
               'g.f{cursor:pointer} g.f:hover rect{stroke:#000;stroke-width:0.5}'
               'g.parent rect{opacity:0.6} #cs-title{font-size:17px} .btn{cursor:pointer}'
               '</style>')
    out.append(f'<rect x="0" y="0" width="{width}" height="{height}" fill="rgb(248,248,240)"/>')
    out.append(f'<text id="cs-title" x="{width / 2}" y="24" text-anchor="middle">'
               f'{html.escape(title)}</text>')
    out.append(f'<text id="cs-unzoom" class="btn" x="{pad}" y="24" style="opacity:0">Reset Zoom</text>')
    out.append(f'<text id="cs-search" class="btn" x="{width - pad}" y="24" text-anchor="end">Search</text>')
    out.append(f'<text id="cs-matched" x="{width - pad}" y="{height - 12}" text-anchor="end"> </text>')
    out.append(f'<text id="cs-details" x="{pad}" y="{height - 12}"> </text>')
    for i, (depth, x, w, path, node) in enumerate(rows):
        name = "all" if not path else path[-1]
        y = height - 40 - (depth + 1) * row_h
        if diff_deltas is not None:
            delta = diff_deltas.get(tuple(path), 0.0)
            fill = _diff_color(delta, scale)
            delta_attr = f' data-delta="{delta:.4f}"'
        else:
            fill = "rgb(240,200,120)" if not path else _color(name)
            delta_attr = ""
        share = 100 * node.value / total
        out.append(
            f'<g class="f" id="f{i}" data-x="{x:.9f}" data-w="{w:.9f}" data-d="{depth}" '
            f'data-v="{node.value:g}" data-name="{html.escape(name)}" '
            f'data-label="{html.escape(short_label(name))}" data-fill="{fill}"{delta_attr}>'
            f'<title>{html.escape(name)} ({node.value:,.0f} {html.escape(unit)}, {share:.2f}%)</title>'
            f'<rect x="{pad + x * span:.2f}" y="{y}" width="{w * span:.2f}" height="{row_h - 1}" '
            f'fill="{fill}" rx="2" ry="2"/>'
            f'<text x="{pad + x * span + 3:.2f}" y="{y + 12}"></text></g>')
    out.append(f'<script type="text/ecmascript"><![CDATA[{_SCRIPT}]]></script>')
    out.append('</svg>')
    return "\n".join(out) + "\n"


def render_html(profile: FlameProfile, title: str | None = None,
                diff_deltas: dict[tuple[str, ...], float] | None = None,
                extra_html: str = "") -> str:
    title = title or _title(profile)
    svg = render_svg(profile, title=title, diff_deltas=diff_deltas, standalone=False)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in profile.notes)
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:Verdana,sans-serif;margin:12px}"
        "#bar{margin-bottom:8px}#bar input{width:320px}</style></head><body>\n"
        "<div id=\"bar\"><label>Search <input id=\"cs-search-input\" "
        "placeholder=\"regular expression\"></label></div>\n"
        f"{svg}"
        f"{'<ul>' + notes + '</ul>' if notes else ''}{extra_html}"
        "</body></html>\n")
