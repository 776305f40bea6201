"""P4: the vLLM engine through vlserve (`model_engine: vLLM`, launched through the API) against vLLM's own OpenAI
server (`python -m vllm.entrypoints.openai.api_server`) on the same checkpoint folder, c=1..8, same request mix.

Both servers run with the interpreter given by `--vllm-python` (vLLM may live in its own venv) and the same
settings (`VllmSetup`: on CPU bf16, max_model_len 8192, max_num_seqs 16, 16 images per prompt, a 2 GiB KV cache;
torch.compile in the full profile, enforce_eager on both sides in the quick one, since cold compiles take minutes).
vLLM's server is stock except that vlserve's `internvl_chat` config class is registered before it starts (the
twins ship no remote code), it gets the internvl2_5 chat template (`benchmarks/internvl2_5_chat_template.jinja`)
and vlserve's exported tokenizer (InternLM2 checkpoints otherwise need remote code), so both sides see the same
prompts; prompt token counts are compared and a mismatch is noted. Requests carry `ignore_eos` and `min_tokens`
(fixed output on vLLM). Images are 448×448, one tile under any budget, so both servers tile them alike without
per-request processor kwargs (vLLM 0.32 refuses `max_dynamic_patch` there). Skipped, with the reason, where vLLM
is not importable. P7 runs the same comparison on a GPU with the full-size 8B architecture.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from benchmarks import models
from benchmarks.config import BENCH_DIR
from benchmarks.load import run_http
from benchmarks.results import ScenarioResult, skipped
from benchmarks.scenarios import Context
from benchmarks.scenarios.compare import Side, sweep
from benchmarks.servers import Server, free_port, launch, vlserve_server
from benchmarks.workload import RequestSpec, image_mix, text_mix

TILE = 448

ID, TITLE = "P4", "vLLM engine through vlserve vs vLLM's own OpenAI server"
BASELINE = "vLLM's OpenAI server (python -m vllm.entrypoints.openai.api_server), same folder and settings"
UID = "bench-vllm"
IF_MISSED = (
    "both sides run the same vLLM engine core (vLLM's CPU auto-binding puts each server's on the same core and "
    "leaves the other to the front ends), so a gap is front-end cost or noise. A twin request lasts a few hundred "
    "ms, the length of this VM's occasional stalls: per-repeat c=1 ratios on the twin have ranged 0.33-4.5x across "
    "runs, and the in-process vLLM engine alone answers the same request in ~35 ms TTFT / ~0.34 s. The full-size "
    "rows (requests of seconds) are the steady-state comparison; more repeats would narrow the twin's spread."
)
VLLM_MAIN = (
    "import runpy, sys; import vlserve.families.internvl2_5.vllm_support; "
    "sys.argv = ['vllm.entrypoints.openai.api_server', *sys.argv[1:]]; "
    "runpy.run_module('vllm.entrypoints.openai.api_server', run_name='__main__', alter_sys=True)"
)


@dataclass(frozen=True)
class VllmSetup:
    """One set of settings, as vlserve launch options and as the equivalent vLLM server flags."""

    options: dict[str, Any]
    flags: list[str]
    env: dict[str, str] = field(default_factory=dict)


CPU = VllmSetup(
    options={"dtype": "bfloat16", "max_model_len": 8192, "max_num_seqs": 16},
    flags=["--dtype", "bfloat16", "--max-model-len", "8192", "--max-num-seqs", "16"],
    env={"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_NO_USAGE_STATS": "1"},
)


def run(ctx: Context) -> ScenarioResult:
    python = ctx.config.vllm_python
    usable, reason = vllm_usable(python)
    if not usable:
        return skipped(ID, TITLE, BASELINE, reason)
    cfg, result = ctx.config, ScenarioResult(ID, TITLE, BASELINE)
    tokens, setup = cfg.p1_max_tokens, eager(CPU) if cfg.p4_enforce_eager else CPU
    variants = [("1B twin, 1-tile image", models.twin, lambda n: for_vllm(one_tile_mix(n, tokens)))]
    if cfg.p4_full_size:
        variants.insert(0, ("1B full-size, text", models.full_size, lambda n: for_vllm(text_mix(n, tokens))))
    for label, prepare, mix in variants:
        compare(ctx, result, label, prepare(ctx.work_dir), mix, setup)
    result.notes.append(f"interpreter: {python}; settings {setup.options}, environment {setup.env}")
    return result


def eager(setup: VllmSetup) -> VllmSetup:
    return replace(setup, options={**setup.options, "enforce_eager": True}, flags=[*setup.flags, "--enforce-eager"])


def compare(ctx: Context, result: ScenarioResult, label: str, model: models.PreparedModel,
            mix: Callable[[int], list[RequestSpec]], setup: VllmSetup, if_missed: str = IF_MISSED) -> None:  # fmt: skip
    python = ctx.config.vllm_python
    with vlserve_server(ctx.work_dir, python, setup.env) as ours, vllm_server(ctx, model, setup) as theirs:
        launch(ours, models.launch_body(model, UID, engine="vLLM", **setup.options))
        sweep(ctx, result, label, Side("vlserve", lambda specs, c: run_http(ours.url, UID, specs, c)),
              Side("vLLM server", lambda specs, c: run_http(theirs.url, UID, specs, c)), mix,
              if_missed=if_missed)  # fmt: skip


def vllm_usable(python: str) -> tuple[bool, str]:
    probe = "import vllm, vlserve.engines.vllm_engine.engine, vlserve.families.internvl2_5.vllm_support"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot run {python}: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return False, (f"vLLM is not importable by {python} ({last}); install it with scripts/install-vllm.sh or "
                       "point --vllm-python / VLSERVE_BENCH_VLLM_PYTHON at an interpreter that has it")  # fmt: skip
    return True, ""


def vllm_server(ctx: Context, model: models.PreparedModel, setup: VllmSetup) -> Server:
    python, port = ctx.config.vllm_python, free_port()
    tokenizer = _exported_tokenizer(python, model, ctx.work_dir / "tokenizers" / model.path.name)
    argv = [python, "-c", VLLM_MAIN, "--model", str(model.path), "--tokenizer", str(tokenizer),
            "--served-model-name", UID, "--host", "127.0.0.1", "--port", str(port), *setup.flags,
            "--limit-mm-per-prompt", '{"image": 16}', "--seed", "0",
            "--chat-template", str(BENCH_DIR / "internvl2_5_chat_template.jinja")]  # fmt: skip
    return Server("vllm", argv, port, ctx.work_dir / "logs", setup.env)


def _exported_tokenizer(python: str, model: models.PreparedModel, outdir) -> str:
    """vlserve's tokenizer written in a form vLLM loads without remote code (same ids as the checkpoint's)."""
    code = ("import sys; from pathlib import Path; from vlserve.families.internvl2_5.tokenizer import save_tokenizer; "
            "save_tokenizer(Path(sys.argv[1]), Path(sys.argv[2]))")  # fmt: skip
    subprocess.run([python, "-c", code, str(model.path), str(outdir)], check=True, capture_output=True, timeout=600)
    return str(outdir)


def one_tile_mix(count: int, max_tokens: int) -> list[RequestSpec]:
    """Image requests whose 448×448 images are one tile under any tile budget (the same on both servers)."""
    return image_mix(count, max_tokens, max_tiles=1, size=(TILE, TILE))


def for_vllm(specs: list[RequestSpec]) -> list[RequestSpec]:
    """The same requests with `min_tokens`, which vLLM's server needs for a fixed output length (vlserve ignores it)."""
    return [replace(spec, extra={**spec.extra, "min_tokens": spec.max_tokens}) for spec in specs]
