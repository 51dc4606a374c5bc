"""`make demo`: the shop service's planted problems ranked with their evidence, gone after the fixes, on
the terminal and in the HTML report in headless Chromium (the flame graphs and the plots really render)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.capabilities import require

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def test_demo_report_renders_in_chromium(tmp_path):
    require("bcc", "py-spy", "chromium")
    report = tmp_path / "demo-report.html"
    proc = subprocess.run([sys.executable, "-m", "diag.cli", "doctor", "--demo", "--duration", "1",
                           "--connections", "8", "-o", str(report)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "Findings, by impact" in proc.stdout and f"report: {report}" in proc.stdout
    ranked = [line for line in proc.stdout.splitlines() if line[:4].strip().rstrip(".").isdigit()]
    # the planted problems, each with the code that causes it, ranked errors first; then gone
    expected = ["planted (runtime): the event loop was blocked",
                "planted (runtime): 2 fd leaked per connection cycle",
                "planted (runtime): 13.3 epoll_ctl per request",
                "planted (runtime): N+1 awaits"]
    for want, line in zip(expected, ranked):
        assert want in line, (want, ranked)
    assert "after the fixes: 4 of 4 problems gone" in proc.stdout
    for evidence in ("the loop's thread was in warehouse_stock_levels (examples/shop_service.py",
                     "socket opened at examples/shop_service.py", "in fetch_avatar_planted",
                     "price_planted (examples/shop_service.py", "awaiting sock_recv",
                     "in a loop at order_planted (examples/shop_service.py"):
        assert evidence in proc.stdout, evidence
    assert not any(line.startswith(("  1. [", "  2. [", "  3. [")) and "fixed (runtime)" in line
                   and "[ERROR]" in line for line in ranked)

    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors, requests = [], []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")

            # plots: a latency series per loop and percentile, an fd series per loop, drawn
            for plot, series in (("#plot-latency", 4), ("#plot-fds", 2)):
                paths = page.locator(f"{plot} path.series")
                assert paths.count() == series
                for i in range(series):
                    box = paths.nth(i).bounding_box()
                    assert box and box["width"] > 200, (plot, i, box)

            # flame graphs: on-CPU and await per loop, each in its frame, with the script run
            frames = page.locator("iframe.flame")
            assert frames.count() == 4
            for i in range(4):
                handle = frames.nth(i).element_handle()
                handle.scroll_into_view_if_needed()
                frame = handle.content_frame()
                assert frame.locator("g.f").count() >= 2
                root = frame.locator("g.f rect").first.bounding_box()
                assert root and root["width"] > 1000
                # labels are written by the flame graph's own script: proof that it ran
                labels = frame.evaluate(
                    "Array.from(document.querySelectorAll('g.f text')).map(t => t.textContent)"
                    ".filter(t => t.trim().length > 0).length")
                assert labels >= 1
                assert frame.locator("#cs-title").text_content().startswith("coroscope flame graph")
            # the findings, as ranked on the terminal, in the report's table
            table = page.locator("#findings").inner_text()
            assert "N+1 awaits" in table and "after the fixes: 4 of 4 problems gone" in table
            assert "fetch_avatar_planted" in table and "warehouse_stock_levels" in table
            assert errors == []
            assert all(u.startswith(("file:", "about:", "data:")) for u in requests), requests
        finally:
            browser.close()
