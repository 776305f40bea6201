"""Figures over repeats, checks against targets, and side-by-side repeats.

A `Figure` keeps every sample, so a report can give the median with its min-max and IQR. A comparison is always a
`Figure` of per-repeat ratios from `paired` runs (A and B measured in the same repeat, alternating which goes
first), so machine noise that hits one repeat hits both sides of its ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    samples: tuple[float, ...]

    @classmethod
    def of(cls, name: str, unit: str, samples: Sequence[float]) -> Figure:
        return cls(name, unit, tuple(float(s) for s in samples))

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    @property
    def iqr(self) -> tuple[float, float]:
        if len(self.samples) < 4:
            return self.low, self.high
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q1, q3

    def spread(self) -> str:
        """'12.3 [11.9–12.8] ms (n=5)': median, min–max over the repeats."""
        unit = f" {self.unit}" if self.unit and self.unit != "×" else self.unit
        if len(self.samples) == 1:
            return f"{fmt(self.median)}{unit} (n=1)"
        return f"{fmt(self.median)} [{fmt(self.low)}–{fmt(self.high)}]{unit} (n={len(self.samples)})"

    def to_dict(self) -> dict[str, Any]:
        q1, q3 = self.iqr
        return {"name": self.name, "unit": self.unit, "samples": list(self.samples), "median": self.median,
                "min": self.low, "max": self.high, "q1": q1, "q3": q3}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Figure:
        return cls.of(data["name"], data["unit"], data["samples"])


@dataclass(frozen=True)
class Target:
    """Pass when low <= median <= high; `text` is how the issue states it (e.g. '≥ 0.95×')."""

    text: str
    low: float | None = None
    high: float | None = None

    def met_by(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    @classmethod
    def parse(cls, text: str) -> Target:
        """The target `at_least` / `at_most` / `within` wrote as `text` (results saved without the bounds)."""
        import re

        number = float(re.search(r"[-+]?\d[\d,]*\.?\d*(?:e[-+]?\d+)?", text).group().replace(",", ""))
        if text.startswith("within"):
            return cls(text, 1 - number / 100, 1 + number / 100)
        return cls(text, low=number) if text.startswith("≥") else cls(text, high=number)


def at_least(value: float, unit: str = "×") -> Target:
    return Target(f"≥ {fmt(value)}{unit}", low=value)


def at_most(value: float, unit: str = "") -> Target:
    return Target(f"≤ {fmt(value)}{' ' + unit if unit else ''}", high=value)


def within(fraction: float) -> Target:
    return Target(f"within ±{fraction:.0%}", low=1 - fraction, high=1 + fraction)


@dataclass(frozen=True)
class Check:
    """A figure held against a target: a ratio (×), a difference, or an error bound."""

    figure: Figure
    target: Target | None  # None: reported, no target
    if_missed: str = ""  # why this target can be missed on this machine and what would close it (printed on a miss)

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.target.met_by(self.figure.median)

    def verdict(self) -> str:
        return {True: "pass", False: "MISS", None: "info"}[self.passed]

    def to_dict(self) -> dict[str, Any]:
        bounds = {"target_low": self.target.low, "target_high": self.target.high} if self.target else {}
        return {**self.figure.to_dict(), "target": self.target.text if self.target else None, **bounds,
                "passed": self.passed, "if_missed": self.if_missed}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Check:
        target = None
        if data.get("target") is not None:
            target = Target(data["target"], data.get("target_low"), data.get("target_high"))
            if target.low is None and target.high is None:
                target = Target.parse(data["target"])
        return cls(Figure.from_dict(data), target, data.get("if_missed", ""))


def fmt(value: float) -> str:
    """Three significant digits, no exponent for everyday magnitudes."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 0.01:
        return f"{value:.3g}"
    return f"{value:.2e}"


def ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    return [a / b if b else float("inf") for a, b in zip(numerator, denominator, strict=True)]


def paired(repeats: int, sides: dict[str, Callable[[], Any]], warmup: bool = True) -> dict[str, list[Any]]:
    """Run every side once per repeat (after one unrecorded warm-up each), alternating the order between repeats."""
    names = list(sides)
    if warmup:
        for name in names:
            sides[name]()
    results: dict[str, list[Any]] = {name: [] for name in names}
    for index in range(repeats):
        for name in names if index % 2 == 0 else reversed(names):
            results[name].append(sides[name]())
    return results


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value

