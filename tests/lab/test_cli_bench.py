"""``edgecache bench hitrate``: options, --json shape, determinism, --plot, usage errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgecache.cli import main
from edgecache.lab import report

SMALL = ["--keys", "500", "--requests", "5000", "--no-progress"]


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main(["bench", "hitrate", *SMALL, "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_help_documents_the_options(capsys):
    assert main(["bench", "hitrate", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--trace", "--alpha", "--capacity", "--unit", "--policies", "--seed", "--json", "--plot",
                   "--log-file", "--log-format", "--sizes", "--ttl"):  # fmt: skip
        assert option in text
    assert "opt" in text
    assert "edgecache[lab]" in text


def test_bench_without_a_command_shows_usage(capsys):
    assert main(["bench"]) == 2
    assert "hitrate" in capsys.readouterr().err


def test_json_shape(capsys):
    data = _json(capsys, "--capacity", "1%,10%", "--policies", "lru,opt,s3-fifo")
    assert data["trace"] == "zipf α=0.8"
    assert data["seed"] == 1
    assert "500 keys" in data["about"]
    rows = data["results"]
    assert [(r["capacity"], r["policy"]) for r in rows] == [
        ("1%", "lru"), ("1%", "opt"), ("1%", "s3-fifo"), ("10%", "lru"), ("10%", "opt"), ("10%", "s3-fifo"),
    ]  # fmt: skip
    for row in rows:
        assert row["requests"] == 5000
        assert row["unit"] == "entries"
        assert 0 <= row["hit_ratio"] <= 1
        assert isinstance(row["gap_to_opt"], float)
        assert row["ops_per_s"] > 0
    assert rows[0]["capacity_value"] == 5


def _figures(data: Any) -> list[tuple[str, str, int, int]]:
    return [(r["policy"], r["capacity"], r["hits"], r["hit_bytes"]) for r in data["results"]]


def test_same_seed_same_figures_other_seed_others(capsys):
    argv = ["--trace", "scan", "--scan-length", "50", "--policies", "lru,lfu,w-tinylfu,opt", "--seed", "9"]
    first = _figures(_json(capsys, *argv))
    assert _figures(_json(capsys, *argv)) == first
    other = _figures(_json(capsys, *argv[:-1], "10"))
    assert other != first


def test_byte_capacities_and_sizes(capsys):
    data = _json(capsys, "--unit", "bytes", "--sizes", "uniform:1KiB:64KiB", "--capacity", "1%,1MiB",
                 "--policies", "lru,opt")  # fmt: skip
    assert {r["unit"] for r in data["results"]} == {"bytes"}
    assert data["results"][2]["capacity_value"] == 2**20
    opt = data["results"][1]
    assert opt["note"].startswith("lower bound; OPT ≤")
    assert opt["hit_ratio"] <= opt["opt_upper"] <= 1


def test_table_and_plot(capsys, tmp_path):
    out = tmp_path / "hitrate.png"
    argv = ["--trace", "drift", "--capacity", "1%,5%", "--policies", "lru,opt", "--plot", str(out)]
    assert main(["bench", "hitrate", *SMALL, "--plain", *argv]) == 0
    text = capsys.readouterr().out
    assert "drift" in text.splitlines()[0]
    assert "gap to OPT" in text
    assert f"plot written to {out}" in text
    assert out.stat().st_size > 1000


def test_log_replay_from_a_file(capsys, tmp_path):
    log = tmp_path / "access.log"
    line = '10.0.0.1 - - [10/Oct/2000:13:55:{s:02d} -0700] "GET /item/{k}?utm_source=z HTTP/1.1" 200 100\n'
    log.write_text("".join(line.format(s=i % 60, k=i % 7) for i in range(200)) + "not a log line\n")
    argv = ["--trace", "log", "--log-file", str(log), "--capacity", "3", "--policies", "lru,opt"]
    assert main(["bench", "hitrate", *argv, "--query-ignore", "utm_*", "--json", "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "200 requests replayed, 1 malformed" in data["about"]
    assert "line 201" in data["about"]
    assert data["results"][0]["requests"] == 200
    lru, opt = data["results"]
    # 7 keys in a cycle through 3 entries: LRU's worst case (every request a miss); OPT still hits
    assert (lru["policy"], lru["hits"]) == ("lru", 0)
    assert opt["hits"] > 50


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--capacity", "200%"], "--capacity"),
        (["--policies", "arc"], "--policies: unknown policy arc"),
        (["--alpha", "0"], "alpha"),
        (["--sizes", "normal:1"], "size distribution"),
        (["--trace", "log"], "--trace log needs --log-file"),
        (["--log-file", "x.log"], "only read with --trace log"),
        (["--ttl", "0"], "--ttl"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    assert main(["bench", "hitrate", *SMALL, *argv]) == 2
    assert message in capsys.readouterr().err


def test_unreadable_log_exits_1(capsys, tmp_path):
    missing = tmp_path / "missing.log"
    assert main(["bench", "hitrate", "--trace", "log", "--log-file", str(missing), "--no-progress"]) == 1
    assert "cannot read --log-file" in capsys.readouterr().err


def test_plot_without_matplotlib_is_a_clear_usage_error(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(report, "has_matplotlib", lambda: False)
    assert main(["bench", "hitrate", *SMALL, "--plot", str(tmp_path / "p.png")]) == 2
    assert "pip install 'edgecache[lab]'" in capsys.readouterr().err


def test_table_without_rich_is_plain_text(capsys, monkeypatch):
    monkeypatch.setattr(report, "has_rich", lambda: False)
    assert main(["bench", "hitrate", *SMALL, "--policies", "lru", "--capacity", "1%"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["capacity", "policy"]
    assert set(lines[2]) <= {"-", " "}


def test_progress_bar_goes_to_stderr_and_leaves_stdout_clean(capsys):
    argv = ["bench", "hitrate", "--keys", "500", "--requests", "3000", "--policies", "lru", "--json"]
    assert main(argv) == 0  # with the progress bar (rich, not a terminal here)
    assert json.loads(capsys.readouterr().out)["results"][0]["requests"] == 3000


def test_plain_progress_without_rich(capsys, monkeypatch):
    monkeypatch.setattr(report, "has_rich", lambda: False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    with report.progress(100, "simulating") as advance:
        for _ in range(10):
            advance(10)
    assert capsys.readouterr().err.splitlines() == [f"simulating: {p}%" for p in range(10, 101, 10)]
