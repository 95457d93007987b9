"""Reports of the lab: a table (rich when installed, plain text otherwise), JSON, a plot, a progress bar.

rich and matplotlib come with the optional ``lab`` extra (``pip install 'edgecache[lab]'``). Without rich
the table is plain text and progress is a line per 10 % on a terminal; ``--plot`` without matplotlib fails
with :class:`MissingExtra`, whose message says what to install.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import TextIO

from edgecache.lab.sim import Advance, Result

INSTALL_HINT = "pip install 'edgecache[lab]'"


class MissingExtra(RuntimeError):
    """An optional package of the ``lab`` extra is needed and not installed."""

    def __init__(self, package: str, what: str) -> None:
        super().__init__(f"{what} needs {package}, which is not installed: {INSTALL_HINT}")
        self.package = package


def has_rich() -> bool:
    return find_spec("rich") is not None


def has_matplotlib() -> bool:
    return find_spec("matplotlib") is not None


@contextmanager
def progress(total: int, label: str, *, enabled: bool = True) -> Iterator[Advance]:
    """An ``advance(n)`` function that moves a progress bar on stderr (nothing when disabled)."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    if has_rich():
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import (  # noqa: PLC0415 - optional extra
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)
        return
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    done = [0, 0]  # requests done, last tenth printed

    def advance(n: int) -> None:
        done[0] += n
        tenth = done[0] * 10 // total
        if tenth > done[1]:
            done[1] = tenth
            print(f"{label}: {tenth * 10}%", file=sys.stderr, flush=True)

    yield advance


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


HEADERS = ("trace", "capacity", "policy", "hit %", "byte hit %", "gap to OPT", "ops/s", "note")
_NUMERIC = frozenset({"hit %", "byte hit %", "gap to OPT", "ops/s"})


def rows(results: Sequence[Result]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Headers and cells; the trace column only when the results cover more than one trace."""
    several = len({r.trace for r in results}) > 1
    headers = HEADERS if several else HEADERS[1:]
    out = []
    for r in results:
        gap = "" if r.gap_to_opt is None or r.policy == "opt" else f"{r.gap_to_opt:.2f}"
        cells: tuple[str, ...] = (
            r.trace,
            f"{r.capacity} = {r.capacity_value:,} {r.unit}",
            r.policy,
            _pct(r.hit_ratio),
            _pct(r.byte_hit_ratio),
            gap,
            f"{r.ops_per_s:,.0f}",
            r.note,
        )
        out.append(cells if several else cells[1:])
    return headers, out


def plain_table(results: Sequence[Result]) -> str:
    headers, body = rows(results)
    table = [headers, *body]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(table):
        cells = [
            cell.rjust(w) if headers[i] in _NUMERIC else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results: Sequence[Result]) -> str:
    headers, body = rows(results)
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "".join("---:|" if h in _NUMERIC else "---|" for h in headers),
    ]
    lines.extend("| " + " | ".join(row) + " |" for row in body)
    return "\n".join(lines)


def print_table(results: Sequence[Result], out: TextIO | None = None, *, plain: bool = False) -> None:
    out = out or sys.stdout
    if plain or not has_rich():
        print(plain_table(results), file=out)
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    headers, body = rows(results)
    table = Table(*headers)
    for column in table.columns:
        if column.header in _NUMERIC:
            column.justify = "right"
    for row in body:
        table.add_row(*row)
    # Not a terminal (a pipe, a file): no width to fit, so do not wrap cells at rich's default of 80.
    console = Console(file=out) if out.isatty() else Console(file=out, width=200)
    console.print(table)


def to_json(results: Sequence[Result], **meta: object) -> str:
    return json.dumps({**meta, "results": [r.as_dict() for r in results]}, indent=2, ensure_ascii=False)


def plot(results: Sequence[Result], path: str | Path, *, title: str = "") -> None:
    """Hit ratio against cache size, one line per policy, one panel per trace; written to ``path``."""
    if not has_matplotlib():
        raise MissingExtra("matplotlib", "--plot")
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt  # noqa: PLC0415

    traces = list(dict.fromkeys(r.trace for r in results))
    columns = min(2, len(traces))
    rows_ = (len(traces) + columns - 1) // columns
    fig, axes = plt.subplots(rows_, columns, figsize=(5.2 * columns, 3.6 * rows_ + 0.6), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, trace in zip(flat, traces, strict=False):
        mine = [r for r in results if r.trace == trace]
        for policy in dict.fromkeys(r.policy for r in mine):
            points = sorted((r.capacity_value, 100 * r.hit_ratio) for r in mine if r.policy == policy)
            style = {"linestyle": "--", "color": "black"} if policy == "opt" else {"marker": "o"}
            ax.plot([x for x, _ in points], [y for _, y in points], label=policy, **style)
        ax.set_xscale("log")
        # Ticks at the measured sizes, labelled as the user gave them (e.g. "1%" and its entry count).
        sizes = dict(sorted({r.capacity_value: r.capacity for r in mine}.items()))
        ax.set_xticks(list(sizes), [f"{label}\n{value:,}" for value, label in sizes.items()], fontsize=8)
        ax.minorticks_off()
        ax.set_title(trace, fontsize=10)
        ax.set_xlabel(f"cache size ({mine[0].unit})", fontsize=9)
        ax.set_ylabel("hit ratio (%)", fontsize=9)
        ax.grid(True, alpha=0.3)
    for ax in flat[len(traces) :]:
        ax.set_visible(False)
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
