"""Synthetic traces: the Zipf sampler's distribution, the workloads' shapes, sizes, determinism."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from edgecache.lab.traces import SizeDist, TraceSpec, ZipfSampler, from_keys, generate

# Upper 0.1 % points of chi-square: with a fixed seed the statistic is a fixed number, and a sampler with the
# wrong shape (off by one rank, wrong exponent) lands far above these.
CHI2_999 = {19: 43.82, 29: 59.70}


def _chi_square(n: int, alpha: float, samples: int, seed: int) -> float:
    sampler = ZipfSampler(n, alpha, random.Random(seed))
    counts = Counter(sampler.sample() for _ in range(samples))
    assert set(counts) <= set(range(1, n + 1))
    return sum(
        (counts[k] - samples * sampler.probability(k)) ** 2 / (samples * sampler.probability(k))
        for k in range(1, n + 1)
    )


@pytest.mark.parametrize(("n", "alpha"), [(20, 1.0), (20, 0.8), (30, 1.5), (20, 0.3)])
def test_zipf_sampler_matches_the_distribution(n, alpha):
    assert _chi_square(n, alpha, 40_000, seed=7) < CHI2_999[n - 1]


def test_a_wrong_exponent_is_detected():
    # The check above can fail: samples of Zipf(1.0) judged against Zipf(0.8) probabilities.
    sampler = ZipfSampler(20, 1.0, random.Random(7))
    wrong = ZipfSampler(20, 0.8, random.Random(0))
    counts = Counter(sampler.sample() for _ in range(40_000))
    stat = sum(
        (counts[k] - 40_000 * wrong.probability(k)) ** 2 / (40_000 * wrong.probability(k))
        for k in range(1, 21)
    )
    assert stat > CHI2_999[19]


def test_zipf_sampler_covers_a_large_key_space_in_constant_time_per_sample():
    sampler = ZipfSampler(10**9, 0.9, random.Random(1))
    ranks = [sampler.sample() for _ in range(2000)]
    assert all(1 <= r <= 10**9 for r in ranks)
    assert ranks.count(1) > 0
    assert max(ranks) > 10**6  # the tail is reached without a table of a billion probabilities


def test_zipf_rejects_bad_parameters():
    with pytest.raises(ValueError, match="alpha"):
        ZipfSampler(10, 0.0, random.Random(1))
    with pytest.raises(ValueError, match="key"):
        ZipfSampler(0, 1.0, random.Random(1))


def test_the_same_spec_gives_the_same_trace_and_another_seed_another():
    spec = TraceSpec(keys=1000, requests=5000, seed=3)
    assert generate(spec).keys == generate(spec).keys
    other = generate(TraceSpec(keys=1000, requests=5000, seed=4))
    assert other.keys != generate(spec).keys


def test_sizes_do_not_change_which_keys_are_requested():
    a = generate(TraceSpec(keys=500, requests=2000, sizes=SizeDist.parse("fixed:1")))
    b = generate(TraceSpec(keys=500, requests=2000, sizes=SizeDist.parse("lognormal:4KiB:1.5")))
    assert a.keys == b.keys
    assert set(a.sizes) == {1}
    assert len(set(b.sizes)) > 10


def test_zipf_trace_popularity_is_not_tied_to_key_ids():
    trace = generate(TraceSpec(keys=1000, requests=20_000, alpha=1.0))
    top = Counter(trace.keys).most_common(1)[0][0]
    assert top != 0  # rank 1 is perm[0], a random key
    assert trace.key_space == 1000
    assert trace.times[:3] == [0.0, 0.001, 0.002]


def test_scan_trace_mixes_one_hit_wonders_in_bursts():
    spec = TraceSpec(kind="scan", keys=1000, requests=40_000, scan_fraction=0.25, scan_length=500)
    trace = generate(spec)
    scanned = [k for k in trace.keys if k >= 1000]
    assert len(scanned) == 10_000  # 25 % of the requests
    assert len(set(scanned)) == len(scanned)  # each requested once
    # bursts: 1500 Zipf requests, then 500 scan keys in a row
    assert all(k < 1000 for k in trace.keys[:1500])
    assert all(k >= 1000 for k in trace.keys[1500:2000])
    assert len(trace.sizes) == len(trace.keys)


def test_drift_trace_moves_the_hot_set():
    spec = TraceSpec(kind="drift", keys=1000, requests=40_000, alpha=1.0, drift_shift=0.1, drift_every=10_000)
    trace = generate(spec)
    hot = [Counter(trace.keys[i : i + 10_000]).most_common(5) for i in range(0, 40_000, 10_000)]
    tops = [{k for k, _ in phase} for phase in hot]
    assert all(not (tops[i] & tops[i + 1]) for i in range(3))  # each step brings new favourites
    still = generate(TraceSpec(kind="drift", keys=1000, requests=40_000, alpha=1.0, drift_shift=0.0))
    first, last = Counter(still.keys[:10_000]), Counter(still.keys[30_000:])
    assert first.most_common(1)[0][0] == last.most_common(1)[0][0]


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("fixed:4096", 4096, 4096),
        ("fixed:4KiB", 4096, 4096),
        ("uniform:100:200", 100, 200),
        ("lognormal:8KiB:1", 1, 2**40),
        ("pareto:1.2:1000", 1000, 2**40),
    ],
)
def test_size_distributions(text, low, high):
    dist = SizeDist.parse(text)
    rng = random.Random(1)
    sizes = [dist.sample(rng) for _ in range(2000)]
    assert all(low <= s <= high for s in sizes)


def test_lognormal_median_is_its_first_parameter():
    dist = SizeDist.parse("lognormal:10000:1")
    rng = random.Random(2)
    sizes = sorted(dist.sample(rng) for _ in range(4001))
    assert 9000 < sizes[2000] < 11000


@pytest.mark.parametrize(
    "text", ["fixed", "fixed:x", "uniform:5:1", "lognormal:0:1", "pareto:0:10", "normal:1:2", "uniform:1"]
)
def test_bad_size_distributions_are_rejected(text):
    with pytest.raises(ValueError, match="size distribution"):
        SizeDist.parse(text)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "poisson"}, "unknown workload"),
        ({"alpha": 0}, "alpha"),
        ({"scan_fraction": 1.0}, "scan fraction"),
        ({"keys": 0}, "at least 1"),
        ({"drift_every": 0}, "drift interval"),
    ],
)
def test_bad_specs_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        generate(TraceSpec(**changes))


def test_from_keys_counts_distinct_keys_and_their_bytes():
    trace = from_keys("t", [1, 2, 1, 3], sizes=[10, 20, 10, 30])
    assert (trace.key_space, trace.key_bytes) == (3, 60)
    assert trace.path(2) == "/lab/2"
