"""One run: the selected scenarios in a fixed order, each timed, a failure recorded (with its traceback in the work
folder) without stopping the others; then the table, results-<profile>.json and RESULTS.md."""

from __future__ import annotations

import datetime
import inspect
import json
import time
import traceback
from pathlib import Path

from rich.console import Console

from benchmarks import machine, report
from benchmarks.config import RunConfig
from benchmarks.results import RunResult, ScenarioResult, saved_path
from benchmarks.scenarios import ORDER, Context, module_for


class UnknownScenario(ValueError):
    pass


def select(only: tuple[str, ...]) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(s.strip().upper() for s in only if s.strip()))
    unknown = [s for s in wanted if s not in ORDER]
    if unknown:
        raise UnknownScenario(f"unknown scenario id(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    return tuple(s for s in ORDER if not wanted or s in wanted)


def run(config: RunConfig, console: Console | None = None, command: str = "python -m benchmarks run") -> RunResult:
    console = console or Console()
    ids = select(config.only)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    chart_dir = config.results_path.parent if config.results_path else None
    ctx = Context(config, console, chart_dir)
    started, start = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), time.perf_counter()
    facts, busy = machine.describe(), machine.busy_note()
    results = [_run_one(ctx, scenario_id) for scenario_id in ids]
    for result in results:
        result.busy_note = busy  # the machine as this run found it (a merged result keeps its own run's)
    saved = saved_path(config.work_dir, config.profile)
    if config.merge:
        results = _merged(results, saved)
    outcome = RunResult(config.profile, facts, results, started, time.perf_counter() - start, busy)
    report.print_table(outcome, console)
    saved.write_text(json.dumps(outcome.to_dict(), indent=2))
    if config.results_path is not None:
        report.write(outcome, config.results_path, command)
        console.print(f"wrote {config.results_path}")
    return outcome


def _merged(fresh: list[ScenarioResult], previous: Path) -> list[ScenarioResult]:
    """This run's results, plus the previous run's for the scenarios this one did not run, in ORDER."""
    by_id = {}
    if previous.is_file():
        by_id = {s.id: s for s in RunResult.from_dict(json.loads(previous.read_text())).scenarios}
    by_id.update({s.id: s for s in fresh})
    return [by_id[i] for i in ORDER if i in by_id]


def _run_one(ctx: Context, scenario_id: str) -> ScenarioResult:
    ctx.console.rule(f"{scenario_id}")
    began = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = _measure(ctx, scenario_id)
    result.started = began
    return result


def _measure(ctx: Context, scenario_id: str) -> ScenarioResult:
    start = time.perf_counter()
    try:
        result = module_for(scenario_id).run(ctx)
    except Exception as exc:  # noqa: BLE001 - one scenario failing must not lose the others' figures
        log = ctx.work_dir / "logs" / f"{scenario_id}-failure.txt"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        ctx.console.print(f"[bold red]{scenario_id} failed: {type(exc).__name__}: {exc}[/] (traceback: {log})")
        module = module_for(scenario_id)
        result = ScenarioResult(scenario_id, getattr(module, "TITLE", scenario_id), getattr(module, "BASELINE", ""),
                                status="failed", reason=f"{type(exc).__name__}: {exc}")  # fmt: skip
    result.seconds = time.perf_counter() - start
    result.design = inspect.cleandoc(module_for(scenario_id).__doc__ or "")
    if result.status == "skipped":
        ctx.console.print(f"[yellow]{scenario_id} skipped: {result.reason}[/]")
    return result
