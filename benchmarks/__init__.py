"""vlserve's benchmark harness: every comparison run side by side in one invocation and reported as a ratio.

    python -m benchmarks run [--quick] [--only P3,P5]

Layout: `config` (what a full and a quick run do), `stats` (figures over repeats, checks against targets, paired
side-by-side repeats), `models` (the twins the harness writes for itself under `benchmarks/.work/`), `workload`
(the request mix, as OpenAI JSON and as engine requests), `load` (concurrent clients: async httpx against a server,
asyncio tasks against an in-process engine), `servers` (vlserve and vLLM servers as subprocesses), `arch` (bytes and
FLOPs of an InternVL2.5 config), `scenarios/` (P1-P6 and the B1/B2 bounds, one module each), `report` and
`charts` (the table, RESULTS.md, PNGs), `runner` (selection, timing, failures), `gpu_p7.sh` (P7, GPU only).
Nothing here is imported by vlserve; the harness imports vlserve like any client would.
"""
