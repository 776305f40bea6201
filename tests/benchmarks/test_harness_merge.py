"""`run --only X --merge`: rerun some scenarios and keep the others' last results, each dated, so RESULTS.md can be
rebuilt piece by piece on a machine that is quiet only some of the time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.config import quick_config
from benchmarks.results import ScenarioResult
from benchmarks.runner import run
from benchmarks.stats import Check, Figure, at_least

TINY = ((64, 48),)


def test_a_result_survives_its_json(tmp_path):
    result = ScenarioResult("P9", "title", "baseline", notes=["a note"], started="2026-12-06T21:00:00+00:00")
    result.check(Figure.of("ratio", "×", [0.5, 0.7]), at_least(0.6), if_missed="why")
    result.add(Figure.of("ttft", "s", [1.0]))
    again = ScenarioResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result and again.checks[0].verdict() == "pass" and isinstance(again.checks[0], Check)


def test_merge_keeps_the_other_scenarios_and_dates_each(tmp_path):
    work, report = tmp_path / "work", tmp_path / "RESULTS.md"
    console = Console(record=True, width=160)
    base = {"p3_sizes": TINY, "p3_repeats": 1, "work_dir": work, "results_path": report}
    run(quick_config(only=("P3",), **base), console=console)
    saved = json.loads((work / "results-quick.json").read_text())
    saved["scenarios"].append(ScenarioResult("P6", "launch", "bare load", status="skipped", reason="kept",
                                             started="2026-12-01T10:00:00+00:00").to_dict())  # fmt: skip
    (work / "results-quick.json").write_text(json.dumps(saved))
    merged = run(quick_config(only=("P3",), merge=True, **base), console=console)
    assert [s.id for s in merged.scenarios] == ["P3", "P6"]  # ORDER, with the kept one
    assert merged.scenarios[1].reason == "kept" and merged.scenarios[0].started >= saved["scenarios"][0]["started"]
    markdown = report.read_text(encoding="utf-8")
    assert "## P6 — launch" in markdown and ", measured " in markdown
    alone = run(quick_config(only=("P3",), **base), console=console)  # without --merge: only what ran
    assert [s.id for s in alone.scenarios] == ["P3"]


def test_a_check_saved_without_its_bounds_keeps_its_verdict():
    from benchmarks.stats import Target

    assert (Target.parse("≥ 0.95×").low, Target.parse("≤ 1.15 ×").high) == (0.95, 1.15)
    assert (Target.parse("within ±10%").low, Target.parse("within ±10%").high) == (0.9, 1.1)
    old = {"name": "P1 ratio", "unit": "×", "samples": [0.5, 0.6], "target": "≥ 0.95×", "passed": False}
    assert Check.from_dict(old).verdict() == "MISS"  # results.json written before bounds were saved


def test_report_renders_saved_results_again(tmp_path):
    from benchmarks.__main__ import main

    work, report = tmp_path / "work", tmp_path / "RESULTS.md"
    assert main(["report", "--work", str(work), "--results", str(report)]) == 2  # nothing saved yet
    result = ScenarioResult("P9", "title", "baseline", started="2026-12-06T21:00:00+00:00")
    result.check(Figure.of("ratio", "×", [0.5]), at_least(0.6))
    work.mkdir()
    run = {"profile": "full", "machine": {"cpu": "x"}, "started": "2026-12-06T21:00:00+00:00", "seconds": 60.0,
           "busy_note": "", "scenarios": [result.to_dict()]}  # fmt: skip
    (work / "results-full.json").write_text(json.dumps(run))
    assert main(["report", "--work", str(work), "--results", str(report)]) == 0
    assert "| P9 | ratio | 0.5× (n=1) | ≥ 0.6× | ❌ miss |" in report.read_text(encoding="utf-8")
