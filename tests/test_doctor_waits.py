"""Where a service's tasks wait (diag.doctor.waits) and the findings made of it: the await
site in the service's own code, its source line, and the loop over items it is awaited in."""
from __future__ import annotations

import textwrap

from diag.doctor.findings import find
from diag.doctor.waits import await_site, await_sites, loop_around, looped_at
from diag.model.doctor import FlameGraph
from tests.test_doctor import make_run

SERVICE = textwrap.dedent('''\
    import asyncio

    async def price(sock, item):
        return await asyncio.sleep(0, item)

    async def prices(sock, items):
        return {i: await price(sock, i) for i in items}

    async def totals(sock, orders):
        out = []
        for order in orders:
            out.append(await price(sock, order))
        return out

    async def serve(reader):
        while True:
            await reader.readline()
    ''')
LIB = "/usr/lib/python3.11/asyncio/tasks.py"


def _line(path, text):
    return next(i for i, l in enumerate(path.read_text().splitlines(), 1) if text in l)


def test_the_site_is_the_deepest_frame_of_the_services_own_with_its_source_line(tmp_path):
    svc = tmp_path / "svc.py"
    svc.write_text(SERVICE)
    chain = [f"serve ({svc}:17)", f"prices ({svc}:7)", f"<dictcomp> ({svc}:7)", f"price ({svc}:4)",
             f"sleep ({LIB}:600)", "[future]"]
    site, waits = await_site(chain)
    assert site == f"price ({tmp_path.name}/svc.py:4)"
    assert waits == "`return await asyncio.sleep(0, item)` -> sleep -> [future]"
    assert await_site([f"sleep ({LIB}:600)", "[future]"]) is None   # nothing of the service's


def test_an_await_inside_a_loop_over_items_is_found_and_a_read_loop_is_not(tmp_path):
    svc = tmp_path / "svc.py"
    svc.write_text(SERVICE)
    for_line = _line(svc, "for order in orders")
    assert loop_around(str(svc), _line(svc, "out.append(await")) == for_line
    assert loop_around(str(svc), 4) is None                      # price itself loops over nothing
    assert loop_around(str(svc), _line(svc, "await reader.readline()")) is None   # a while
    comp = [f"prices ({svc}:7)", f"<dictcomp> ({svc}:7)", f"price ({svc}:4)", "[future]"]
    assert looped_at(comp) == f"{tmp_path.name}/svc.py:7 `return {{i: await price(sock, i) for i in items}}`"
    assert looped_at([f"serve ({svc}:17)", "[future]"]) == ""


def test_sites_are_ranked_by_their_share_of_all_waiting(tmp_path):
    svc = tmp_path / "svc.py"
    svc.write_text(SERVICE)
    looped = [f"totals ({svc}:12)", f"price ({svc}:4)", "[future]"]
    idle = [f"serve ({svc}:17)", "[future]"]
    sites = await_sites([(looped, 6.0), (idle, 3.0), ([f"sleep ({LIB}:1)", "[future]"], 1.0),
                         ([f"serve ({svc}:17)", "[running]"], 5.0)])
    assert [(s, round(share, 3)) for s, _w, share, _l in sites] == [
        (f"price ({tmp_path.name}/svc.py:4)", 0.4), (f"serve ({tmp_path.name}/svc.py:17)", 0.2)]
    assert sites[0][3].startswith(f"{tmp_path.name}/svc.py:11 `for order in orders:`")
    assert sites[1][3] == ""


def _await_flame(sites):
    return FlameGraph("await", "sampler", None, 10.0, [("[future]", 1.0)], await_sites=sites)


def test_an_n_plus_1_await_is_a_warning_naming_site_wait_and_loop():
    loop = "svc.py:7 `return {i: await price(i) for i in items}`"
    run = make_run("svc", flames=[_await_flame([("price (x/svc.py:4)", "`await sock_recv()` -> [future]",
                                                 0.8, loop)])])
    (finding,) = [f for f in find([run]) if "await" in f.title]
    assert finding.severity == "warning"
    assert finding.title == ("N+1 await: 80% of task waiting is at price (x/svc.py:4), on "
                             "`await sock_recv()`, awaited once per item of the loop at svc.py:7")
    assert loop in finding.advice and "[future]" not in finding.title


def test_a_single_await_where_tasks_wait_most_is_context_only():
    run = make_run("svc", flames=[_await_flame([("prices (x/svc.py:9)", "`await answer` -> [future]",
                                                 0.9, "")])])
    (finding,) = [f for f in find([run]) if "wait" in f.title]
    assert finding.severity == "info"
    assert finding.title == "tasks wait most (90%) at prices (x/svc.py:9), on `await answer`"


def test_epoll_ctl_on_every_request_is_named_reader_churn():
    churn = make_run("churn", {"epoll_wait": 3, "recvfrom": 3, "sendto": 3, "epoll_ctl": 4})
    clean = make_run("clean", {"epoll_wait": 1, "recvfrom": 1, "sendto": 1, "epoll_ctl": 0.02})
    titles = [(f.run, f.severity, f.title) for f in find([churn, clean]) if "epoll_ctl per" in f.title]
    assert titles == [("churn", "warning",
                       "4 epoll_ctl per request: a reader is added and removed around each read")]
