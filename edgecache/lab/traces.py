"""Synthetic request traces, deterministic for a given seed.

A :class:`Trace` is three parallel lists (key id, object size, time) so the simulator's inner loop walks
plain lists. Keys are dense integers: string keys would make the sketches of some policies depend on
Python's per-process hash salt, and ``--seed`` promises the same figures on every run.

Workloads:

- ``zipf``: ranks drawn from Zipf(alpha) over ``keys`` keys; rank r is key ``perm[r]`` for a random
  permutation, so key ids say nothing about popularity.
- ``scan``: the Zipf stream with scans of one-hit wonders mixed in: blocks of ``scan_length`` fresh keys,
  never requested again, making up ``scan_fraction`` of the requests.
- ``drift``: popularity that moves over time: every ``drift_every`` requests the ranking is rotated by
  ``drift_shift × keys`` (the rank-r key becomes ``perm[(r + offset) % keys]``), so hot keys cool down and
  unseen ones heat up.

Object sizes are drawn once per key from a :class:`SizeDist` (``fixed``, ``uniform``, ``lognormal``,
``pareto``). Times are ``i / rate`` seconds (only the TTL policy reads them).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from edgecache.config import parse_size

DEFAULT_RATE = 1000.0  # requests per second of a synthetic trace, for TTLs in seconds


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    keys: list[int]  # key id of each request
    sizes: list[int]  # size in bytes of the requested object (>= 1)
    times: list[float]  # seconds since the first request, non-decreasing
    key_space: int  # the number of keys capacities in % refer to
    key_bytes: int  # bytes of that key space, for byte capacities in %
    paths: Sequence[str] | None = field(default=None, repr=False)  # key id -> request path (log replays)

    def __len__(self) -> int:
        return len(self.keys)

    def path(self, key: int, prefix: str = "/lab/") -> str:
        """The URL path (with query) a request for ``key`` uses when the trace drives a server: the logged
        path for a log replay, else ``prefix`` and the key id."""
        if self.paths is not None:
            return self.paths[key]
        return f"{prefix}{key}"


# -- object sizes ---------------------------------------------------------------------------------------


def _bytes(text: str) -> float:
    """A size as everywhere in edgecache (``512``, ``4KiB``, ``1.5MB``, ``2GiB``)."""
    try:
        return float(parse_size(text))
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 512, 4KiB, 1.5MB)") from None


@dataclass(frozen=True, slots=True)
class SizeDist:
    """Object sizes: ``fixed:SIZE``, ``uniform:MIN:MAX``, ``lognormal:MEDIAN:SIGMA``, ``pareto:ALPHA:MIN``."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> SizeDist:
        kind, _, rest = text.strip().partition(":")
        args = rest.split(":") if rest else []
        try:
            if kind == "fixed" and len(args) == 1:
                return cls("fixed", max(1.0, _bytes(args[0])))
            if kind == "uniform" and len(args) == 2:
                low, high = _bytes(args[0]), _bytes(args[1])
                if not 1 <= low <= high:
                    raise ValueError("uniform needs 1 <= MIN <= MAX")
                return cls("uniform", low, high)
            if kind == "lognormal" and len(args) == 2:
                median, sigma = _bytes(args[0]), float(args[1])
                if median < 1 or sigma < 0:
                    raise ValueError("lognormal needs MEDIAN >= 1 and SIGMA >= 0")
                return cls("lognormal", median, sigma)
            if kind == "pareto" and len(args) == 2:
                alpha, low = float(args[0]), _bytes(args[1])
                if alpha <= 0 or low < 1:
                    raise ValueError("pareto needs ALPHA > 0 and MIN >= 1")
                return cls("pareto", alpha, low)
        except ValueError as error:
            raise ValueError(f"size distribution {text!r}: {error}") from None
        raise ValueError(
            f"size distribution {text!r}: expected fixed:SIZE, uniform:MIN:MAX, lognormal:MEDIAN:SIGMA "
            "or pareto:ALPHA:MIN"
        )

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            value = self.a
        elif self.kind == "uniform":
            value = rng.uniform(self.a, self.b)
        elif self.kind == "lognormal":
            value = rng.lognormvariate(math.log(self.a), self.b)
        else:
            value = self.b * rng.paretovariate(self.a)
        # Bounded: a heavy pareto tail would otherwise draw objects larger than any cache.
        return max(1, min(int(value), 2**40))


# -- Zipf ---------------------------------------------------------------------------------------------


class ZipfSampler:
    """Zipf(alpha) over ranks 1..n in O(1) per sample: rejection-inversion (Hörmann & Derflinger 1996).

    No table of n probabilities: a sample inverts the integral of the continuous density h(x) = x^-alpha
    and accepts it with a test that rejects rarely (the expected number of tries is close to 1), so
    sampling costs the same for 100 keys or 100 million. Any alpha > 0, including 1.
    """

    __slots__ = ("_alpha", "_h_integral_n", "_h_integral_x1", "_n", "_rng", "_s")

    def __init__(self, n: int, alpha: float, rng: random.Random) -> None:
        if n < 1:
            raise ValueError("Zipf needs at least one key")
        if not alpha > 0:
            raise ValueError("Zipf alpha must be positive")
        self._n = n
        self._alpha = alpha
        self._rng = rng
        self._h_integral_x1 = self._h_integral(1.5) - 1.0
        self._h_integral_n = self._h_integral(n + 0.5)
        self._s = 2.0 - self._h_integral_inverse(self._h_integral(2.5) - self._h(2.0))

    def _h(self, x: float) -> float:
        return math.exp(-self._alpha * math.log(x))

    def _h_integral(self, x: float) -> float:
        log_x = math.log(x)
        return _helper2((1.0 - self._alpha) * log_x) * log_x

    def _h_integral_inverse(self, x: float) -> float:
        t = x * (1.0 - self._alpha)
        t = max(t, -1.0)  # rounding may push it below -1, where log1p is undefined
        return math.exp(_helper1(t) * x)

    def sample(self) -> int:
        """One rank in 1..n; rank 1 is the most popular."""
        n = self._n
        random_ = self._rng.random
        while True:
            u = self._h_integral_n + random_() * (self._h_integral_x1 - self._h_integral_n)
            x = self._h_integral_inverse(u)
            k = int(x + 0.5)
            k = 1 if k < 1 else (min(k, n))
            if k - x <= self._s or u >= self._h_integral(k + 0.5) - self._h(k):
                return k

    def probability(self, k: int) -> float:
        """The exact probability of rank ``k`` (O(n): for tests and small n)."""
        norm = math.fsum(math.pow(i, -self._alpha) for i in range(1, self._n + 1))
        return math.pow(k, -self._alpha) / norm


def _helper1(x: float) -> float:
    """log1p(x) / x, accurate near 0."""
    if abs(x) > 1e-8:
        return math.log1p(x) / x
    return 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))


def _helper2(x: float) -> float:
    """expm1(x) / x, accurate near 0."""
    if abs(x) > 1e-8:
        return math.expm1(x) / x
    return 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))


# -- workloads ----------------------------------------------------------------------------------------

WORKLOADS = ("zipf", "scan", "drift")


@dataclass(frozen=True, slots=True)
class TraceSpec:
    kind: str = "zipf"
    keys: int = 100_000
    requests: int = 1_000_000
    alpha: float = 0.8
    seed: int = 1
    sizes: SizeDist = SizeDist("fixed", 4096)
    scan_fraction: float = 0.25  # share of requests that are one-hit wonders (scan)
    scan_length: int = 5000  # requests per scan burst (scan)
    drift_shift: float = 0.02  # share of the key space the ranking rotates by at each step (drift)
    drift_every: int = 50_000  # requests between two rotations (drift)
    rate: float = DEFAULT_RATE

    def check(self) -> None:
        if self.kind not in WORKLOADS:
            raise ValueError(f"unknown workload {self.kind!r}; expected one of {', '.join(WORKLOADS)}")
        if self.keys < 1 or self.requests < 1:
            raise ValueError("keys and requests must be at least 1")
        if not self.alpha > 0:
            raise ValueError("alpha must be positive")
        if not 0 <= self.scan_fraction < 1:
            raise ValueError("scan fraction must be in [0, 1)")
        if self.scan_length < 1:
            raise ValueError("scan length must be at least 1")
        if not 0 <= self.drift_shift <= 1:
            raise ValueError("drift shift must be in [0, 1]")
        if self.drift_every < 1:
            raise ValueError("drift interval must be at least 1 request")
        if not self.rate > 0:
            raise ValueError("rate must be positive")

    @property
    def name(self) -> str:
        if self.kind == "zipf":
            return f"zipf α={self.alpha:g}"
        if self.kind == "scan":
            return f"zipf α={self.alpha:g} + {self.scan_fraction:.0%} scans"
        return f"zipf α={self.alpha:g}, drift {self.drift_shift:.0%}/{self.drift_every}"


def generate(spec: TraceSpec) -> Trace:
    """The trace ``spec`` describes; the same spec (seed included) always gives the same trace."""
    spec.check()
    n = spec.keys
    # Separate streams, so changing the size distribution does not change which keys are requested.
    rank_rng = random.Random(f"edgecache-lab:{spec.seed}:ranks")
    size_rng = random.Random(f"edgecache-lab:{spec.seed}:sizes")
    perm = list(range(n))
    random.Random(f"edgecache-lab:{spec.seed}:perm").shuffle(perm)
    key_sizes = [spec.sizes.sample(size_rng) for _ in range(n)]
    sample = ZipfSampler(n, spec.alpha, rank_rng).sample
    total = spec.requests
    keys: list[int] = []
    append = keys.append

    if spec.kind == "zipf":
        for _ in range(total):
            append(perm[sample() - 1])
    elif spec.kind == "drift":
        shift = max(1, round(spec.drift_shift * n)) if spec.drift_shift else 0
        every = spec.drift_every
        for i in range(total):
            append(perm[(sample() - 1 + shift * (i // every)) % n])
    else:
        scan_len = spec.scan_length
        block = max(scan_len + 1, round(scan_len / spec.scan_fraction)) if spec.scan_fraction else total
        fresh = n
        while len(keys) < total:
            for _ in range(min(block - scan_len, total - len(keys))):
                append(perm[sample() - 1])
            if spec.scan_fraction:
                for _ in range(min(scan_len, total - len(keys))):
                    append(fresh)
                    fresh += 1
        key_sizes.extend(spec.sizes.sample(size_rng) for _ in range(fresh - n))

    sizes = [key_sizes[k] for k in keys]
    rate = spec.rate
    times = [i / rate for i in range(total)]
    return Trace(spec.name, keys, sizes, times, key_space=n, key_bytes=sum(key_sizes[:n]))


def from_keys(name: str, keys: Sequence[int], sizes: Sequence[int] | int = 1, rate: float = 1.0) -> Trace:
    """A trace from explicit key ids (tests, hand-worked examples); the key space is the distinct keys."""
    keys = list(keys)
    sizes = [sizes] * len(keys) if isinstance(sizes, int) else list(sizes)
    if len(sizes) != len(keys):
        raise ValueError("one size per request")
    first: dict[int, int] = {}
    for k, s in zip(keys, sizes, strict=True):
        first.setdefault(k, s)
    return Trace(
        name,
        keys,
        sizes,
        [i / rate for i in range(len(keys))],
        key_space=len(first),
        key_bytes=sum(first.values()),
    )
