#!/usr/bin/env python3
"""Hit ratios of the shipped L1 policy against LRU, LFU and a fixed-window W-TinyLFU on synthetic traces.

Traces (``--keys`` keys, ``--requests`` requests, deterministic for a ``--seed``):

* ``zipf0.8`` / ``zipf1.0`` - independent requests, key of popularity rank ``r`` drawn with probability
  proportional to ``1 / r**alpha`` (ranks shuffled over the key space).
* ``scan`` - Zipf 0.9 traffic in which, every 20,000 requests, a run of 5,000 one-hit wonders is requested
  (a crawler or cache-busting query strings): 20 % of all requests are keys seen once.
* ``drift`` - Zipf 1.0 whose popularity moves: every 50,000 requests the ranking is rotated by 2 % of the
  key space, so yesterday's hot keys cool down and unseen ones heat up (LFU keeps stale favourites).

Capacities are entries (every weight is 1): ``--capacities`` as fractions of the key space.

Policies, all driven through the same ``access(key) -> hit`` loop:

* ``LRU``       - ``cachetools.LRUCache``.
* ``LFU``       - ``cachetools.LFUCache`` (in-cache LFU: counts are kept for resident keys only).
* ``W-TinyLFU`` - ``edgecache.core.admission.AdmissionPolicy(adaptive=False, window_hot=0.0)``: Caffeine's
  layout, its plain LRU window fixed at 1 %.
* ``theine``    - the ``theine`` package's W-TinyLFU (Rust core), when installed (``pip install theine``).
* ``edgecache`` - ``AdmissionPolicy(capacity)``: the shipped L1 (adaptive, segmented window).

Then the per-operation cost: a mixed hit/miss loop over the ``zipf1.0`` trace at 1 %, timed for
``AdmissionPolicy`` (touch; add on a miss) and for ``cachetools.LRUCache`` (lookup; insert on a miss), in the
same run, best of ``--repeats``.

Run: ``.venv/bin/python benchmarks/l1_policy.py [--requests 1000000] [--json]`` (about a minute per policy
and trace at the defaults on one core; ``--requests 200000`` for a quick look).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from cachetools import LFUCache, LRUCache

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.reporting import positive_int  # noqa: E402 - after sys.path is set up
from edgecache.core.admission import AdmissionPolicy  # noqa: E402

TRACES = ("zipf0.8", "zipf1.0", "scan", "drift")
SCAN_EVERY = 20_000
SCAN_LENGTH = 5_000
DRIFT_EVERY = 50_000
DRIFT_SHIFT = 0.02


# -- traces ----------------------------------------------------------------------------------------------


def _zipf_ranks(rng: random.Random, keys: int, alpha: float, count: int) -> list[int]:
    cumulative = list(itertools.accumulate(1.0 / (rank**alpha) for rank in range(1, keys + 1)))
    total = cumulative[-1]
    draws = [rng.random() * total for _ in range(count)]
    return [bisect.bisect_left(cumulative, draw) for draw in draws]


def make_trace(name: str, keys: int, requests: int, seed: int) -> list[str]:
    """Keys as strings ``"k<id>"``; scan keys are ``"s<n>"``, never repeated."""
    rng = random.Random(f"{name}/{seed}")
    key_of_rank = list(range(keys))
    rng.shuffle(key_of_rank)
    if name in ("zipf0.8", "zipf1.0"):
        ranks = _zipf_ranks(rng, keys, float(name[4:]), requests)
        return [f"k{key_of_rank[rank]}" for rank in ranks]
    if name == "scan":
        scan_ranks = iter(_zipf_ranks(rng, keys, 0.9, requests))
        trace: list[str] = []
        scanned = 0
        while len(trace) < requests:
            if len(trace) % SCAN_EVERY == SCAN_EVERY - SCAN_LENGTH:
                run = min(SCAN_LENGTH, requests - len(trace))
                trace.extend(f"s{scanned + i}" for i in range(run))
                scanned += run
            else:
                trace.append(f"k{key_of_rank[next(scan_ranks)]}")
        return trace
    if name == "drift":
        ranks = _zipf_ranks(rng, keys, 1.0, requests)
        shift = max(1, int(keys * DRIFT_SHIFT))
        return [f"k{key_of_rank[(rank + shift * (i // DRIFT_EVERY)) % keys]}" for i, rank in enumerate(ranks)]
    raise ValueError(f"unknown trace {name!r}; choose from {', '.join(TRACES)}")


# -- policies --------------------------------------------------------------------------------------------


class Simulated(Protocol):
    def access(self, key: str) -> bool: ...


class CachetoolsPolicy:
    def __init__(self, cache: LRUCache[str, bool] | LFUCache[str, bool]) -> None:
        self.cache = cache

    def access(self, key: str) -> bool:
        cache = self.cache
        if key in cache:
            cache[key]  # the read is what updates recency / frequency
            return True
        cache[key] = True
        return False


class AdmissionSimulated:
    def __init__(self, policy: AdmissionPolicy) -> None:
        self.policy = policy

    def access(self, key: str) -> bool:
        if self.policy.touch(key):
            return True
        self.policy.add(key, 1)
        return False


class TheineSimulated:
    def __init__(self, capacity: int) -> None:
        from theine import Cache  # noqa: PLC0415 - optional, bench only

        self.cache: Any = Cache(capacity, nolock=True)

    def access(self, key: str) -> bool:
        _, found = self.cache.get(key)
        if found:
            return True
        self.cache.set(key, True)
        return False


def _theine_available() -> bool:
    try:
        import theine  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


POLICIES: dict[str, Callable[[int], Simulated]] = {
    "LRU": lambda capacity: CachetoolsPolicy(LRUCache(capacity)),
    "LFU": lambda capacity: CachetoolsPolicy(LFUCache(capacity)),
    "W-TinyLFU": lambda capacity: AdmissionSimulated(
        AdmissionPolicy(capacity, adaptive=False, window_hot=0.0)
    ),
    "theine": TheineSimulated,
    "edgecache": lambda capacity: AdmissionSimulated(AdmissionPolicy(capacity)),
}


def hit_ratio(policy: Simulated, trace: Sequence[str]) -> float:
    access = policy.access
    return sum(1 for key in trace if access(key)) / len(trace)


# -- per-operation cost ----------------------------------------------------------------------------------


def _time_loop(run: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def operation_costs(trace: Sequence[str], capacity: int, repeats: int) -> dict[str, float]:
    """Nanoseconds per request, best of ``repeats`` runs: a mixed loop (lookup, plus an insert on a miss)
    from empty caches, and a hit-only loop (lookups of resident keys: the HTTP hit path's share)."""

    def run_policy() -> None:
        policy = AdmissionPolicy(capacity)
        touch, add = policy.touch, policy.add
        for key in trace:
            if not touch(key):
                add(key, 1)

    def run_lru() -> None:
        cache: LRUCache[str, bool] = LRUCache(capacity)
        get = cache.get
        for key in trace:
            if get(key) is None:
                cache[key] = True

    policy = AdmissionPolicy(capacity)
    lru: LRUCache[str, bool] = LRUCache(capacity)
    for key in trace:
        if not policy.touch(key):
            policy.add(key, 1)
        if lru.get(key) is None:
            lru[key] = True
    policy_hits = [key for key in trace if key in policy]
    lru_hits = [key for key in trace if key in lru]

    def hits_policy() -> None:
        touch = policy.touch
        for key in policy_hits:
            touch(key)

    def hits_lru() -> None:
        get = lru.get
        for key in lru_hits:
            get(key)

    n = len(trace)
    return {
        "edgecache_ns": _time_loop(run_policy, repeats) / n * 1e9,
        "cachetools_lru_ns": _time_loop(run_lru, repeats) / n * 1e9,
        "edgecache_hit_ns": _time_loop(hits_policy, repeats) / len(policy_hits) * 1e9,
        "cachetools_lru_hit_ns": _time_loop(hits_lru, repeats) / len(lru_hits) * 1e9,
    }


# -- main ------------------------------------------------------------------------------------------------


def _fractions(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from exc
    if not values or any(not 0 < value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"fractions must be in (0, 1), got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=positive_int, default=100_000)
    parser.add_argument("--requests", type=positive_int, default=1_000_000)
    parser.add_argument("--capacities", type=_fractions, default=[0.001, 0.01, 0.1])
    parser.add_argument("--traces", default=",".join(TRACES), help=f"subset of {','.join(TRACES)}")
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"subset of {','.join(POLICIES)}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed runs of the cost loop")
    parser.add_argument("--json", action="store_true")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    policies = [name for name in args.policies.split(",") if name]
    for name in policies:
        if name not in POLICIES:
            raise SystemExit(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")
    if "theine" in policies and not _theine_available():
        print("theine is not installed: its column is skipped", file=sys.stderr)
        policies.remove("theine")
    rows: list[dict[str, Any]] = []
    cost: dict[str, float] = {}
    for trace_name in [name for name in args.traces.split(",") if name]:
        trace = make_trace(trace_name, args.keys, args.requests, args.seed)
        for fraction in args.capacities:
            capacity = max(1, round(args.keys * fraction))
            ratios = {name: hit_ratio(POLICIES[name](capacity), trace) for name in policies}
            rows.append(
                {"trace": trace_name, "capacity": capacity, "fraction": fraction, "hit_ratio": ratios}
            )
            print(_render_row(rows[-1], policies), file=sys.stderr, flush=True)
        if trace_name == "zipf1.0":
            cost = operation_costs(trace[: min(len(trace), 300_000)], max(1, args.keys // 100), args.repeats)
    return {
        "config": {"keys": args.keys, "requests": args.requests, "seed": args.seed, "policies": policies},
        "rows": rows,
        "cost": cost,
    }


def _render_row(row: dict[str, Any], policies: Iterator[str] | list[str]) -> str:
    cells = "".join(f"{row['hit_ratio'][name] * 100:>11.1f}" for name in policies)
    return f"{row['trace']:<9}{row['fraction'] * 100:>7.1f}%{row['capacity']:>9}{cells}"


def render(report: dict[str, Any]) -> str:
    policies = report["config"]["policies"]
    lines = [
        f"hit ratio (%), {report['config']['keys']:,} keys, {report['config']['requests']:,} requests, "
        f"seed {report['config']['seed']}",
        f"{'trace':<9}{'size':>8}{'entries':>9}" + "".join(f"{name:>11}" for name in policies),
    ]
    lines += [_render_row(row, policies) for row in report["rows"]]
    if report["cost"]:
        cost = report["cost"]
        lines += [
            "",
            "per request (lookup + insert on a miss), zipf1.0 at 1 %:",
            f"  edgecache AdmissionPolicy  {cost['edgecache_ns']:8.0f} ns",
            f"  cachetools.LRUCache        {cost['cachetools_lru_ns']:8.0f} ns",
            f"  ratio                      {cost['edgecache_ns'] / cost['cachetools_lru_ns']:8.2f}x",
            "per hit (lookup of a resident key), same trace:",
            f"  edgecache AdmissionPolicy  {cost['edgecache_hit_ns']:8.0f} ns",
            f"  cachetools.LRUCache        {cost['cachetools_lru_hit_ns']:8.0f} ns",
            f"  ratio                      {cost['edgecache_hit_ns'] / cost['cachetools_lru_hit_ns']:8.2f}x",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
