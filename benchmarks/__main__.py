"""``make bench``: run the whole suite, print the table, write JSON to benchmarks/results/<date>.json.

    python -m benchmarks [--quick] [--only micro,echo,http] [--json FILE]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.suite import estimated_seconds, render, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test, not numbers")
    parser.add_argument("--only", default="micro,echo,http",
                        help="comma-separated sections: micro, echo, http")
    parser.add_argument("--json", help="where to write the results "
                                       "(default benchmarks/results/<date>.json)")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(only) - {"micro", "echo", "http"}
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    print(f"benchmarks: {', '.join(only)}; this takes about "
          f"{estimated_seconds(args.quick, only) / 60:.0f} min", flush=True)
    report = run(quick=args.quick, only=only)
    print(render(report))
    from diag.model.base import write_json_atomic
    out = Path(args.json) if args.json else (
        Path(__file__).resolve().parent / "results" / f"{time.strftime('%Y-%m-%d', time.gmtime())}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
