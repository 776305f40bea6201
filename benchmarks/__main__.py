"""python -m benchmarks run [--quick] [--only P3,P5 [--merge]] [--repeats N] [--work DIR] [--results FILE | --no-write]"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from benchmarks.config import DEFAULT_RESULTS, DEFAULT_WORK, full_config, quick_config
from benchmarks.scenarios import ORDER


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m benchmarks", description="vlserve's benchmark harness.")
    verbs = root.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="run the scenarios, print the table, rewrite RESULTS.md",
                           description="Run benchmark scenarios side by side and report every figure with its spread.")  # fmt: skip
    run.add_argument("--quick", action="store_true",
                     help="every CPU scenario at reduced repeats, output lengths and model sizes (< 10 min)")  # fmt: skip
    run.add_argument("--only", default="", metavar="IDS", help=f"comma-separated scenario ids: {', '.join(ORDER)}")
    run.add_argument("--merge", action="store_true",
                     help="with --only: keep every other scenario's result from the last run of this profile "
                          "(results-<profile>.json in --work); each section says when it was measured")  # fmt: skip
    run.add_argument("--repeats", type=int, default=None, metavar="N",
                     help="measured repeats per side for the model scenarios (default: 3 full, 1 quick)")  # fmt: skip
    run.add_argument("--work", type=Path, default=DEFAULT_WORK, metavar="DIR",
                     help="models, server logs and results JSON (default: benchmarks/.work)")  # fmt: skip
    out = run.add_mutually_exclusive_group()
    out.add_argument("--results", type=Path, default=DEFAULT_RESULTS, metavar="FILE",
                     help="the Markdown report to rewrite; charts go next to it (default: benchmarks/RESULTS.md)")  # fmt: skip
    out.add_argument("--no-write", action="store_true", help="print the table only")
    run.add_argument("--vllm-python", default=None, metavar="PYTHON",
                     help="interpreter with vLLM installed, for P4's servers (default: $VLSERVE_BENCH_VLLM_PYTHON "
                          "or this interpreter)")  # fmt: skip
    again = verbs.add_parser("report", help="rewrite RESULTS.md from the last run's results-<profile>.json",
                             description="Render the report again from saved results, without measuring.")  # fmt: skip
    again.add_argument("--quick", action="store_true", help="the quick profile's results")
    again.add_argument("--work", type=Path, default=DEFAULT_WORK, metavar="DIR")
    again.add_argument("--results", type=Path, default=DEFAULT_RESULTS, metavar="FILE")
    return root


def _report(args: argparse.Namespace) -> int:
    import json

    from benchmarks import report
    from benchmarks.results import RunResult, saved_path

    saved = saved_path(args.work, "quick" if args.quick else "full")
    if not saved.is_file():
        print(f"benchmarks: no saved results at {saved}; run `python -m benchmarks run` first", file=sys.stderr)
        return 2
    run = RunResult.from_dict(json.loads(saved.read_text()))
    report.write(run, args.results, "python -m benchmarks report")
    print(f"wrote {args.results}")
    return 0


def _interrupt_on_sigterm() -> None:
    """A `timeout`/kill ends the run like Ctrl-C, so every server subprocess is stopped on the way out."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.verb == "report":
        return _report(args)
    _interrupt_on_sigterm()
    from benchmarks.runner import UnknownScenario, run

    overrides = {"work_dir": args.work, "results_path": None if args.no_write else args.results,
                 "only": tuple(s for s in args.only.split(",") if s.strip()), "merge": args.merge}  # fmt: skip
    if args.repeats is not None:
        overrides["repeats"] = max(1, args.repeats)
    if args.vllm_python:
        overrides["vllm_python"] = args.vllm_python
    config = (quick_config if args.quick else full_config)(**overrides)
    command = "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:])
    try:
        outcome = run(config, command=command)
    except UnknownScenario as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 2
    return 1 if any(s.status == "failed" for s in outcome.scenarios) else 0


if __name__ == "__main__":
    sys.exit(main())
