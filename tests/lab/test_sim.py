"""The simulator: capacities, results, gap to OPT, and reports built from them."""

from __future__ import annotations

import json

import pytest

from edgecache.lab import report
from edgecache.lab.sim import ALL_POLICIES, Capacity, parse_capacities, parse_policies, replay, run
from edgecache.lab.traces import TraceSpec, from_keys, generate


@pytest.fixture(scope="module")
def trace():
    return generate(TraceSpec(keys=2000, requests=30_000, alpha=1.0, seed=2))


def test_capacities(trace):
    caps = parse_capacities("0.1%, 1%,10%,250", trace)
    assert [(c.value, c.unit) for c in caps] == [
        (2, "entries"),
        (20, "entries"),
        (200, "entries"),
        (250, "entries"),
    ]
    assert [c.value for c in parse_capacities("64KiB,1MB", trace)] == [65536, 10**6]
    in_bytes = parse_capacities("1%,5000", trace, "bytes")
    assert [(c.value, c.unit) for c in in_bytes] == [(trace.key_bytes // 100, "bytes"), (5000, "bytes")]


@pytest.mark.parametrize("text", ["", "0%", "150%", "x%", "0", "lots", "-5", "1%,64MiB"])
def test_bad_capacities(trace, text):
    with pytest.raises(ValueError, match="capacit"):
        parse_capacities(text, trace)


def test_policies_parse():
    assert parse_policies("all") == list(ALL_POLICIES)
    assert parse_policies("LRU, opt,lru") == ["lru", "opt"]
    with pytest.raises(ValueError, match="unknown policy arc"):
        parse_policies("lru,arc")


def test_run_fills_in_the_gap_to_opt(trace):
    results = run(trace, ["opt", "lru", "w-tinylfu"], parse_capacities("1%,10%", trace))
    assert [(r.capacity, r.policy) for r in results] == [
        ("1%", "opt"),
        ("1%", "lru"),
        ("1%", "w-tinylfu"),
        ("10%", "opt"),
        ("10%", "lru"),
        ("10%", "w-tinylfu"),
    ]
    by = {(r.capacity, r.policy): r for r in results}
    for cap in ("1%", "10%"):
        opt = by[cap, "opt"]
        assert opt.note == "exact"
        assert opt.gap_to_opt == 0
        for name in ("lru", "w-tinylfu"):
            r = by[cap, name]
            assert r.gap_to_opt == round(100 * (opt.hit_ratio - r.hit_ratio), 2)
            assert 0 < r.gap_to_opt < 40
    assert by["1%", "w-tinylfu"].hit_ratio > by["1%", "lru"].hit_ratio
    assert by["10%", "lru"].hit_ratio > by["1%", "lru"].hit_ratio
    # entries: every object weighs the same, so hit ratio and byte hit ratio agree for fixed sizes
    assert all(r.hit_ratio == r.byte_hit_ratio for r in results)


def test_byte_capacities_weigh_objects_by_size():
    # capacity 100 bytes: the 60-byte object and the 50-byte one cannot both stay
    trace = from_keys("t", [1, 2, 1, 2, 1], sizes=[60, 50, 60, 50, 60])
    lru = replay(trace, "lru", Capacity("100", "bytes", 100))
    assert lru.hits == 0
    small = replay(trace, "lru", Capacity("200", "bytes", 200))
    assert (small.hits, small.hit_bytes, small.total_bytes) == (3, 170, 280)
    opt = replay(trace, "opt", Capacity("100", "bytes", 100))
    assert opt.note.startswith("lower bound; OPT ≤ ")
    assert opt.hits == 2  # keeps object 1 (needed soonest), bypasses 2
    assert opt.opt_upper is not None
    assert opt.opt_upper >= opt.hit_ratio


def test_progress_is_advanced_once_per_request(trace):
    seen: list[int] = []
    run(trace, ["lru", "opt"], parse_capacities("1%", trace), advance=seen.append)
    assert sum(seen) == 2 * len(trace)


def test_deterministic_figures(trace):
    caps = parse_capacities("1%", trace)
    names = list(ALL_POLICIES)
    first = [(r.policy, r.hits, r.hit_bytes) for r in run(trace, names, caps)]
    again = generate(TraceSpec(keys=2000, requests=30_000, alpha=1.0, seed=2))
    assert first == [(r.policy, r.hits, r.hit_bytes) for r in run(again, names, caps)]


def test_reports(trace, tmp_path):
    results = run(trace, ["opt", "lru"], parse_capacities("1%,5%", trace))
    plain = report.plain_table(results)
    assert plain.splitlines()[0].split()[:3] == ["capacity", "policy", "hit"]
    assert "20 entries" in plain
    md = report.markdown_table(results)
    assert md.count("\n") == 1 + len(results)
    data = json.loads(report.to_json(results, trace=trace.name))
    assert data["trace"] == trace.name
    assert {"policy", "capacity", "hit_ratio", "byte_hit_ratio", "gap_to_opt", "ops_per_s"} <= set(
        data["results"][0]
    )
    out = tmp_path / "plot.png"
    report.plot(results, out, title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_names_the_extra(monkeypatch, trace, tmp_path):
    monkeypatch.setattr(report, "has_matplotlib", lambda: False)
    with pytest.raises(report.MissingExtra, match=r"edgecache\[lab\]"):
        report.plot([], tmp_path / "x.png")
