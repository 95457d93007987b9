#!/usr/bin/env python3
"""The README's "Measuring hit rates" table and plot, made by the lab (``edgecache.lab``).

Four synthetic traces, ``--keys`` keys and ``--requests`` requests each, seed ``--seed``:

* ``zipf 0.8`` and ``zipf 1.0`` - independent Zipf requests;
* ``scan``  - Zipf 0.9 with bursts of 5,000 one-hit wonders making up 25 % of the requests;
* ``drift`` - Zipf 1.0 whose ranking rotates by 2 % of the key space every 50,000 requests;

every policy of ``edgecache bench hitrate`` (OPT, LRU, LFU, FIFO, TTL-only, W-TinyLFU, S3-FIFO and the
shipped L1, ``edgecache``) at 0.1 %, 1 % and 10 % of the key space, in entries. Prints a Markdown table of
hit ratios (%) per trace and capacity, the simulated operations per second of each policy (best over the
runs), and checks the shipped L1 against issue 6's targets. Writes ``--plot`` (default docs/hitrate.png).

The same figures, one trace at a time, from the command line:
``edgecache bench hitrate --trace zipf --alpha 1.0 --keys 100000 --requests 1000000``.

Run: ``.venv/bin/python benchmarks/hitrate_table.py`` (about 3 minutes at the full 100k keys / 1M requests
on one core; ``--requests 200000 --keys 20000`` for a quick look). To refresh the README after a change to
the shipped L1: ``--json docs/hitrate.json --update-readme`` (the plot goes to docs/hitrate.png anyway).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from edgecache.lab import report  # noqa: E402 - after sys.path is set up
from edgecache.lab.policies import shipped_l1  # noqa: E402
from edgecache.lab.sim import ALL_POLICIES, Result, parse_capacities, run  # noqa: E402
from edgecache.lab.traces import TraceSpec, generate  # noqa: E402

CAPACITIES = "0.1%,1%,10%"


def specs(keys: int, requests: int, seed: int) -> dict[str, TraceSpec]:
    base = TraceSpec(keys=keys, requests=requests, seed=seed)
    return {
        "zipf 0.8": replace(base, kind="zipf", alpha=0.8),
        "zipf 1.0": replace(base, kind="zipf", alpha=1.0),
        "scan": replace(base, kind="scan", alpha=0.9, scan_fraction=0.25, scan_length=5000),
        "drift": replace(base, kind="drift", alpha=1.0, drift_shift=0.02, drift_every=50_000),
    }


def pivot(results: list[Result], policies: list[str]) -> str:
    """Rows: trace × capacity; columns: policies; cells: hit ratio in %."""
    lines = ["| trace | capacity | " + " | ".join(policies) + " |", "|---|---|" + "---:|" * len(policies)]
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for r in results:
        cells.setdefault((r.trace, r.capacity), {})[r.policy] = 100 * r.hit_ratio
    for (trace, capacity), row in cells.items():
        best_online = max(v for p, v in row.items() if p != "opt")
        values = [
            f"**{row[p]:.1f}**" if p != "opt" and row[p] == best_online else f"{row[p]:.1f}" for p in policies
        ]
        lines.append(f"| {trace} | {capacity} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def speed(results: list[Result], policies: list[str]) -> str:
    best = {p: max(r.ops_per_s for r in results if r.policy == p) for p in policies}
    header = "| | " + " | ".join(policies) + " |\n|---|" + "---:|" * len(policies)
    return (
        header
        + "\n| simulated ops/s (best) | "
        + " | ".join(f"{best[p] / 1e6:.2f} M" for p in policies)
        + " |"
    )


README_START = "<!-- hitrate-table: written by benchmarks/hitrate_table.py --update-readme -->"
README_END = "<!-- /hitrate-table -->"


def update_readme(path: Path, results: list[Result], policies: list[str]) -> None:
    """Replace the README's table (between the two markers) with these results."""
    text = path.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{path}: no {README_START!r} ... {README_END!r} block to update")
    best = {p: max(r.ops_per_s for r in results if r.policy == p) for p in policies}
    rates = ", ".join(f"{p} {best[p] / 1e6:.2f} M" for p in policies)
    block = (
        f"{README_START}\n{pivot(results, policies)}\n\nSimulated operations per second (best over the runs, "
        f"pure Python, this machine): {rates}.\n"
    )
    path.write_text(text[:start] + block + text[end:])


def check_targets(results: list[Result]) -> list[str]:
    """Issue 6's targets for the shipped L1; one line per check."""
    by = {(r.trace, r.capacity, r.policy): 100 * r.hit_ratio for r in results}
    lines = []
    for trace, capacity, _ in sorted({(t, c, p) for t, c, p in by if p == "edgecache"}):
        ours = by[trace, capacity, "edgecache"]
        better = max(by[trace, capacity, "lfu"], by[trace, capacity, "w-tinylfu"])
        lru = by[trace, capacity, "lru"]
        ok = ours >= better - 1 and ours >= lru
        if trace.startswith("zipf") and capacity == "1%":
            ok = ok and ours >= lru + 8
        lines.append(
            f"{'ok  ' if ok else 'MISS'} {trace:9} {capacity:5} edgecache {ours:5.1f}  "
            f"best of LFU/W-TinyLFU {better:5.1f} ({ours - better:+.1f})  LRU {lru:5.1f} ({ours - lru:+.1f})"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--plot", default=str(REPO_ROOT / "docs" / "hitrate.png"), help="PNG to write ('' for none)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write every result as JSON")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--from-json", metavar="PATH", help="print and plot the results a --json run saved")
    parser.add_argument("--update-readme", action="store_true", help="rewrite the table in README.md")
    args = parser.parse_args(argv)
    policies = list(ALL_POLICIES)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        results = [Result.from_dict(r) for r in saved["results"]]
        args.keys, args.requests, args.seed = saved["keys"], saved["requests"], saved["seed"]
        l1, elapsed = saved.get("edgecache", "?"), saved.get("seconds", 0.0)
    else:
        traces = specs(args.keys, args.requests, args.seed)
        results = []
        started = time.perf_counter()
        total = len(traces) * 3 * len(policies) * args.requests
        with report.progress(total, "simulating", enabled=not args.no_progress) as advance:
            for label, spec in traces.items():
                trace = replace(generate(spec), name=label)  # short names for the table
                results.extend(run(trace, policies, parse_capacities(CAPACITIES, trace), advance=advance))
        elapsed = time.perf_counter() - started
        _, l1 = shipped_l1(10)
    print(
        f"{args.keys:,} keys, {args.requests:,} requests per trace, seed {args.seed}; capacities in entries; "
        f"edgecache = {l1}; {elapsed:.0f} s in all\n"
    )
    print(pivot(results, policies))
    print()
    print(speed(results, policies))
    print()
    print("\n".join(check_targets(results)))
    if args.plot:
        report.plot(results, args.plot, title=f"hit ratio, {args.keys:,} keys, {args.requests:,} requests")
        print(f"\nplot written to {args.plot}")
    if args.update_readme:
        update_readme(REPO_ROOT / "README.md", results, policies)
        print("README.md table updated")
    if args.json:
        meta = {"keys": args.keys, "requests": args.requests, "seed": args.seed, "edgecache": l1}
        Path(args.json).write_text(report.to_json(results, **meta, seconds=round(elapsed, 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
