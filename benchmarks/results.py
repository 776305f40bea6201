"""What a scenario hands back, and what a run is: the records the table, RESULTS.md and results.json are made of."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from benchmarks.stats import Check, Figure

Status = Literal["ok", "skipped", "failed"]


@dataclass
class ScenarioResult:
    id: str
    title: str
    baseline: str
    status: Status = "ok"
    reason: str = ""  # why skipped or failed
    checks: list[Check] = field(default_factory=list)  # figures held against the targets (or info ratios)
    figures: list[Figure] = field(default_factory=list)  # the raw measurements behind them
    notes: list[str] = field(default_factory=list)  # design choices and caveats a reader needs
    charts: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    design: str = ""  # how the scenario measures (its module's docstring)
    started: str = ""  # when this scenario's measurement began (UTC, ISO)
    busy_note: str = ""  # other work on the machine when it began (empty: quiet)

    def check(self, figure: Figure, target=None, if_missed: str = "") -> Check:
        made = Check(figure, target, if_missed)
        self.checks.append(made)
        return made

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "baseline": self.baseline, "status": self.status,
            "reason": self.reason, "seconds": self.seconds, "checks": [c.to_dict() for c in self.checks],
            "figures": [f.to_dict() for f in self.figures], "notes": self.notes, "design": self.design,
            "charts": [str(p) for p in self.charts], "started": self.started, "busy_note": self.busy_note,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScenarioResult:
        """A result as `to_dict` wrote it (results-<profile>.json), for `run --merge`."""
        return cls(
            data["id"], data["title"], data["baseline"], data["status"], data.get("reason", ""),
            [Check.from_dict(c) for c in data.get("checks", ())], [Figure.from_dict(f) for f in data.get("figures", ())],
            list(data.get("notes", ())), [Path(p) for p in data.get("charts", ())], data.get("seconds", 0.0),
            data.get("design", ""), data.get("started", ""), data.get("busy_note", ""),
        )  # fmt: skip


def skipped(id: str, title: str, baseline: str, reason: str) -> ScenarioResult:
    return ScenarioResult(id, title, baseline, status="skipped", reason=reason)


@dataclass
class RunResult:
    profile: str
    machine: dict[str, str]
    scenarios: list[ScenarioResult]
    started: str
    seconds: float
    busy_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "machine": self.machine, "started": self.started, "seconds": self.seconds,
                "busy_note": self.busy_note, "scenarios": [s.to_dict() for s in self.scenarios]}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        scenarios = [ScenarioResult.from_dict({"started": data.get("started", ""),
                                               "busy_note": data.get("busy_note", ""), **s})
                     for s in data["scenarios"]]  # fmt: skip
        return cls(data["profile"], data["machine"], scenarios, data["started"], data["seconds"],
                   data.get("busy_note", ""))  # fmt: skip


def saved_path(work_dir: Path, profile: str) -> Path:
    """Where a run of `profile` keeps its results (`run --merge` and `report` read them back)."""
    return work_dir / f"results-{profile}.json"
