"""The benchmark harness cannot rot: a quick P3 run on tiny images produces the table, RESULTS.md and the results
JSON with the expected structure; every scenario id resolves to a runnable module; the CLI refuses unknown ids.
No timing assertions: figures on shared CI machines mean nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `benchmarks` is a top-level package of the repository, not of the installed project
    sys.path.insert(0, str(REPO))

from benchmarks.__main__ import main
from benchmarks.config import quick_config
from benchmarks.runner import run
from benchmarks.scenarios import ORDER, module_for
from benchmarks.stats import Figure, paired, within

TINY = ((64, 48), (300, 120), (900, 450))


@pytest.fixture(scope="module")
def p3_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    console = Console(record=True, width=160)
    config = quick_config(only=("P3",), p3_sizes=TINY, p3_repeats=2, work_dir=out / "work",
                          results_path=out / "RESULTS.md")  # fmt: skip
    return run(config, console=console, command="pytest smoke"), out, console.export_text()


def test_quick_p3_produces_checks_for_every_size(p3_run):
    outcome, _, _ = p3_run
    assert outcome.profile == "quick" and [s.id for s in outcome.scenarios] == ["P3"]
    p3 = outcome.scenarios[0]
    assert p3.status == "ok", p3.reason
    names = [c.figure.name for c in p3.checks]
    for width, height in TINY:
        assert sum(name.startswith(f"{width}×{height} ") for name in names) == 3  # diff, speed-up, floor ratio
    diffs = [c for c in p3.checks if c.figure.name.endswith("max abs diff")]
    assert all(c.passed for c in diffs)  # equality is not a timing: it must hold everywhere
    assert all(len(f.samples) == 2 for f in p3.figures)


def test_table_markdown_and_json_are_written(p3_run):
    _, out, printed = p3_run
    assert "vlserve benchmarks (quick profile)" in printed and "speed-up vs reference" in printed
    markdown = (out / "RESULTS.md").read_text(encoding="utf-8")
    for heading in ("## How to run", "## Machine", "## Summary", "## P3 — ", "## Method"):
        assert heading in markdown
    assert "| torch |" in markdown and "Smoke figures, not results" in markdown
    saved = json.loads((out / "work" / "results-quick.json").read_text())
    check = saved["scenarios"][0]["checks"][0]
    assert {"name", "unit", "samples", "median", "min", "max", "q1", "q3", "target", "passed"} <= set(check)
    assert saved["machine"]["cpu"] and saved["machine"]["torch"]


def test_every_scenario_id_has_a_module():
    for scenario_id in ORDER:
        module = module_for(scenario_id)
        assert module.ID == scenario_id and module.TITLE and module.BASELINE and callable(module.run)


def test_cli_refuses_unknown_ids(capsys):
    assert main(["run", "--only", "P99", "--no-write"]) == 2
    assert "unknown scenario id(s) P99" in capsys.readouterr().err


def test_p12_mask_timing_walks_both_libraries(tmp_path):
    """P12's mask measurement on the 1B twin's tokenizer: each library walks the scenario's schema to its end."""
    from benchmarks import grammar_masks
    from benchmarks.scenarios.p12_structured import schema
    from vlserve.families.internvl2_5.twin import write_twin

    times = grammar_masks.measure(write_twin("InternVL2_5-1B", tmp_path / "twin"), schema(1), walks=2)
    assert [t.library for t in times] == ["xgrammar", "llguidance"]
    for t in times:
        assert len(t.fill_us) == len(t.apply_us) > 2 * 20 and t.median("fill_us") > 0 and t.compile_s > 0


def test_paired_alternates_sides_and_figures_summarise():
    order: list[str] = []
    paired(3, {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=True)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up each, then a b / b a / a b
    figure = Figure.of("x", "s", [1.0, 2.0, 3.0, 10.0])
    assert (figure.median, figure.low, figure.high) == (2.5, 1.0, 10.0)
    assert figure.spread() == "2.5 [1–10] s (n=4)"
    assert within(0.1).met_by(1.05) and not within(0.1).met_by(0.85)


def test_a_missed_target_prints_its_explanation_once(tmp_path):
    from benchmarks.report import markdown
    from benchmarks.results import RunResult, ScenarioResult
    from benchmarks.stats import at_least

    scenario = ScenarioResult("PX", "demo", "baseline")
    scenario.check(Figure.of("c=1: ratio", "×", [0.5, 0.6]), at_least(0.95), "because of the demo")
    scenario.check(Figure.of("c=8: ratio", "×", [0.7]), at_least(0.95), "because of the demo")
    scenario.check(Figure.of("c=16: ratio", "×", [1.2]), at_least(0.95), "never printed: this one passes")
    text = markdown(RunResult("full", {}, [scenario], "now", 1.0), tmp_path / "RESULTS.md", "cmd")
    assert text.count("because of the demo") == 1 and "never printed" not in text
    assert "**Missed** (c=1: ratio; c=8: ratio): because of the demo" in text
