"""Run policies over a trace at several capacities: hit ratio, byte hit ratio, gap to OPT, ops/s.

Capacities are given as text: ``1%`` of the key space (its entries, or its bytes with ``unit="bytes"``), a
plain number in the chosen unit, or a size with a unit suffix (``64MiB``), which is always bytes. In entry
capacities every object weighs 1; in byte capacities it weighs its size. Every policy replays the same trace
from a fresh state; OPT is computed from the whole trace (see ``opt``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import repeat
from typing import Any

from edgecache.lab.opt import belady, upper_bound
from edgecache.lab.policies import POLICIES, make_policy
from edgecache.lab.traces import Trace, _bytes

CHUNK = 20_000  # requests between progress updates
ALL_POLICIES = ("opt", *POLICIES)

Advance = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Capacity:
    label: str  # as the user wrote it: "1%", "1000", "64MiB"
    unit: str  # "entries" or "bytes"
    value: int  # in weight units


def parse_capacities(text: str, trace: Trace, unit: str = "entries") -> list[Capacity]:
    """``0.1%,1%,10%`` / ``1000`` / ``64MiB`` → capacities in weight units for ``trace``."""
    if unit not in ("entries", "bytes"):
        raise ValueError(f"unit must be entries or bytes, not {unit!r}")
    result = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.endswith("%"):
            try:
                share = float(item[:-1]) / 100
            except ValueError:
                raise ValueError(f"capacity {item!r}: not a percentage") from None
            if not 0 < share <= 1:
                raise ValueError(f"capacity {item!r}: a percentage must be in (0, 100]")
            base = trace.key_space if unit == "entries" else trace.key_bytes
            result.append(Capacity(item, unit, max(1, round(base * share))))
        elif re.fullmatch(r"[0-9]+", item):
            if int(item) < 1:
                raise ValueError(f"capacity {item!r}: must be at least 1")
            result.append(Capacity(item, unit, int(item)))
        else:
            try:
                value = int(_bytes(item))
            except ValueError:
                raise ValueError(
                    f"capacity {item!r}: expected a percentage (1%), a number or a size (64MiB)"
                ) from None
            if value < 1:
                raise ValueError(f"capacity {item!r}: must be at least 1 byte")
            result.append(Capacity(item, "bytes", value))
    if not result:
        raise ValueError("no capacity given")
    if len({c.unit for c in result}) > 1:
        # One run, one unit: hit ratios in entries and in bytes do not share an axis or a gap to OPT.
        raise ValueError(f"capacities {text!r} mix entries and bytes; use --unit bytes or separate runs")
    return result


def parse_policies(text: str) -> list[str]:
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    if names == ["all"]:
        return list(ALL_POLICIES)
    unknown = [n for n in names if n not in ALL_POLICIES]
    if unknown or not names:
        raise ValueError(
            f"unknown policy {', '.join(unknown) or '(none)'}; expected some of {', '.join(ALL_POLICIES)} "
            "or all"
        )
    return list(dict.fromkeys(names))


@dataclass(slots=True)
class Result:
    trace: str
    policy: str
    capacity: str
    unit: str
    capacity_value: int
    requests: int
    hits: int
    hit_bytes: int
    total_bytes: int
    seconds: float
    note: str = ""  # e.g. what the "edgecache" policy is in this build, or "approximation" for byte OPT
    gap_to_opt: float | None = None  # points of hit ratio below OPT at the same capacity
    opt_upper: float | None = None  # byte-capacity OPT: an upper bound on its hit ratio (see opt.upper_bound)

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def byte_hit_ratio(self) -> float:
        return self.hit_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def ops_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        """The inverse of ``as_dict`` (derived ratios are recomputed, not read)."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.update(
            hit_ratio=round(self.hit_ratio, 6),
            byte_hit_ratio=round(self.byte_hit_ratio, 6),
            ops_per_s=round(self.ops_per_s, 1),
            seconds=round(self.seconds, 4),
        )
        return data


def _ignore(_: int) -> None:
    return None


def replay(
    trace: Trace, policy_name: str, capacity: Capacity, *, ttl: float = 60.0, advance: Advance = _ignore
) -> Result:
    """One policy (or ``opt``) over the whole trace at one capacity."""
    keys, sizes, times = trace.keys, trace.sizes, trace.times
    n = len(keys)
    weighted = capacity.unit == "bytes"
    total_bytes = sum(sizes)
    if policy_name == "opt":
        started = time.perf_counter()
        hits, hit_bytes = belady(keys, sizes if weighted else [1] * n, sizes, capacity.value)
        if weighted:  # two feasible schedules: the better one is the tighter lower bound
            hits, hit_bytes = max(
                (hits, hit_bytes), belady(keys, sizes, sizes, capacity.value, size_aware=True)
            )
        seconds = time.perf_counter() - started
        advance(n)
        if not weighted:
            note, upper = "exact", None
        else:
            upper = upper_bound(keys, sizes, capacity.value) / n if n else 0.0
            note = f"lower bound; OPT ≤ {100 * upper:.2f} %"
        return Result(
            trace.name, "opt", capacity.label, capacity.unit, capacity.value, n, hits, hit_bytes,
            total_bytes, seconds, note, opt_upper=upper,
        )  # fmt: skip
    entries = capacity.value
    if weighted:  # how many objects of the key space's mean size fit, to size the sketches
        entries = max(1, round(capacity.value * trace.key_space / max(1, trace.key_bytes)))
    policy = make_policy(policy_name, capacity.value, entries=entries, ttl=ttl)
    access = policy.access
    hits = hit_bytes = 0
    started = time.perf_counter()
    for start in range(0, n, CHUNK):
        end = min(n, start + CHUNK)
        weights: Iterable[int] = sizes[start:end] if weighted else repeat(1)
        for key, weight, size, now in zip(
            keys[start:end], weights, sizes[start:end], times[start:end], strict=False
        ):
            if access(key, weight, now):
                hits += 1
                hit_bytes += size
        advance(end - start)
    seconds = time.perf_counter() - started
    note = str(getattr(policy, "description", ""))
    return Result(
        trace.name, policy_name, capacity.label, capacity.unit, capacity.value, n, hits, hit_bytes,
        total_bytes, seconds, note,
    )  # fmt: skip


def run(
    trace: Trace,
    policies: Sequence[str],
    capacities: Sequence[Capacity],
    *,
    ttl: float = 60.0,
    advance: Advance = _ignore,
) -> list[Result]:
    """Every policy at every capacity (capacity-major order), with the gap to OPT filled in if OPT ran."""
    results = []
    for capacity in capacities:
        row = [replay(trace, name, capacity, ttl=ttl, advance=advance) for name in policies]
        optimum = next((r for r in row if r.policy == "opt"), None)
        if optimum is not None:
            for r in row:
                r.gap_to_opt = round(100 * (optimum.hit_ratio - r.hit_ratio), 2)
        results.extend(row)
    return results
