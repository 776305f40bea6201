"""PNG charts next to RESULTS.md, where a picture says it better (tok/s vs concurrency, TTFT vs tiles). matplotlib
is optional (`pip install -e .[bench]`): without it a scenario reports its figures and notes that the chart is
missing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.stats import Figure


@dataclass(frozen=True)
class Series:
    label: str
    xs: Sequence[float]
    figures: Sequence[Figure] = ()  # measured: median with a min–max bar
    values: Sequence[float] = ()  # computed (a bound): a dashed line


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def line_chart(path: Path, title: str, xlabel: str, ylabel: str, series: Sequence[Series]) -> Path | None:
    """Write the chart; None when matplotlib is not installed."""
    if not available():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for line in series:
        if line.figures:
            medians = [f.median for f in line.figures]
            bars = [[m - f.low for m, f in zip(medians, line.figures)], [f.high - m for m, f in zip(medians, line.figures)]]
            ax.errorbar(line.xs, medians, yerr=bars, marker="o", capsize=3, label=line.label)
        else:
            ax.plot(line.xs, line.values, linestyle="--", label=line.label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_xticks(sorted({x for line in series for x in line.xs}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
