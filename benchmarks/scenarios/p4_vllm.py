"""P4: the vLLM engine through vlserve (`model_engine: vLLM`, launched through the API) against vLLM's own OpenAI
server (`python -m vllm.entrypoints.openai.api_server`) on the same checkpoint folder, c=1..8, same request mix.

Both servers run with the interpreter given by `--vllm-python` (vLLM may live in its own venv) and the same
settings: bf16, max_model_len 8192, max_num_seqs 16, 16 images per prompt, a 2 GiB CPU KV cache
(VLLM_CPU_KVCACHE_SPACE). vLLM's server is stock except that vlserve's `internvl_chat` config class is registered
before it starts (the twins ship no remote code) and it gets the internvl2_5 chat template
(`benchmarks/internvl2_5_chat_template.jinja`), so both sides see the same prompts; prompt token counts are compared
and a mismatch is noted. Requests carry `ignore_eos` and `min_tokens` (fixed output on vLLM), `max_tiles` (vlserve)
and `mm_processor_kwargs.max_dynamic_patch` (vLLM). Skipped, with the reason, where vLLM is not importable.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace

from benchmarks import models
from benchmarks.config import BENCH_DIR
from benchmarks.load import run_http
from benchmarks.results import ScenarioResult, skipped
from benchmarks.scenarios import Context
from benchmarks.scenarios.compare import Side, sweep
from benchmarks.servers import Server, free_port, launch, vlserve_server
from benchmarks.workload import RequestSpec, image_mix, text_mix

ID, TITLE = "P4", "vLLM engine through vlserve vs vLLM's own OpenAI server"
BASELINE = "vLLM's OpenAI server (python -m vllm.entrypoints.openai.api_server), same folder and settings"
UID = "p4"
ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_USAGE_STATS_ENABLED": "0", "VLLM_NO_USAGE_STATS": "1"}
SETTINGS = {"dtype": "bfloat16", "max_model_len": 8192, "max_num_seqs": 16}
VLLM_MAIN = (
    "import runpy, sys; import vlserve.families.internvl2_5.vllm_support; "
    "sys.argv = ['vllm.entrypoints.openai.api_server', *sys.argv[1:]]; "
    "runpy.run_module('vllm.entrypoints.openai.api_server', run_name='__main__', alter_sys=True)"
)


def run(ctx: Context) -> ScenarioResult:
    python = ctx.config.vllm_python
    usable, reason = vllm_usable(python)
    if not usable:
        return skipped(ID, TITLE, BASELINE, reason)
    cfg, result = ctx.config, ScenarioResult(ID, TITLE, BASELINE)
    tokens = cfg.p1_max_tokens
    variants = [("1B twin, 1-tile image", models.twin, lambda n: _for_vllm(image_mix(n, tokens, max_tiles=1)))]
    if cfg.p1_full_size:
        variants.insert(0, ("1B full-size, text", models.full_size, lambda n: _for_vllm(text_mix(n, tokens))))
    for label, prepare, mix in variants:
        model = prepare(ctx.work_dir)
        with vlserve_server(ctx.work_dir, python, ENV) as ours, vllm_server(ctx, model, python) as theirs:
            launch(ours, models.launch_body(model, UID, engine="vLLM", **SETTINGS))
            sweep(ctx, result, label, Side("vlserve", lambda specs, c: run_http(ours.url, UID, specs, c)),
                  Side("vLLM server", lambda specs, c: run_http(theirs.url, UID, specs, c)), mix)  # fmt: skip
    result.notes.append(f"interpreter: {python}; settings {SETTINGS}, KV cache {ENV['VLLM_CPU_KVCACHE_SPACE']} GiB")
    return result


def vllm_usable(python: str) -> tuple[bool, str]:
    probe = "import vllm, vlserve.engines.vllm_engine.engine, vlserve.families.internvl2_5.vllm_support"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot run {python}: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return False, (f"vLLM is not importable by {python} ({last}); install it with scripts/install-vllm.sh or "
                       "point --vllm-python / VLSERVE_BENCH_VLLM_PYTHON at an interpreter that has it")  # fmt: skip
    return True, ""


def vllm_server(ctx: Context, model: models.PreparedModel, python: str) -> Server:
    port = free_port()
    argv = [python, "-c", VLLM_MAIN, "--model", str(model.path), "--served-model-name", UID, "--host", "127.0.0.1",
            "--port", str(port), "--dtype", SETTINGS["dtype"], "--max-model-len", str(SETTINGS["max_model_len"]),
            "--max-num-seqs", str(SETTINGS["max_num_seqs"]), "--limit-mm-per-prompt", '{"image": 16}',
            "--chat-template", str(BENCH_DIR / "internvl2_5_chat_template.jinja"), "--seed", "0",
            "--disable-log-requests"]  # fmt: skip
    return Server("vllm", argv, port, ctx.work_dir / "logs", ENV)


def _for_vllm(specs: list[RequestSpec]) -> list[RequestSpec]:
    """The same requests with the fields vLLM's server needs for the same work (vlserve ignores them)."""
    out = []
    for spec in specs:
        extra = {"min_tokens": spec.max_tokens}
        if spec.image_size is not None:
            extra["mm_processor_kwargs"] = {"max_dynamic_patch": spec.max_tiles}
        out.append(replace(spec, extra={**spec.extra, **extra}))
    return out
