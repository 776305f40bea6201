"""Where vlserve keeps its state and which defaults it uses, read from the environment.

VLSERVE_HOME       state folder: model cache, user registrations, logs, built CPU kernels (default ~/.vlserve)
VLSERVE_ENDPOINT   server the CLI talks to (default http://127.0.0.1:9997)
VLSERVE_MODEL_SRC  default hub when a launch names none: huggingface or modelscope (default huggingface)
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ENDPOINT = "http://127.0.0.1:9997"
HUBS = ("huggingface", "modelscope")


def home() -> Path:
    return Path(os.environ.get("VLSERVE_HOME") or Path.home() / ".vlserve").expanduser()


def cache_dir() -> Path:
    return home() / "cache"


def kernels_dir() -> Path:
    return home() / "kernels"


def registrations_dir() -> Path:
    return home() / "registrations"


def endpoint() -> str:
    return os.environ.get("VLSERVE_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def default_hub() -> str:
    hub = os.environ.get("VLSERVE_MODEL_SRC", "huggingface").strip().lower()
    return hub or "huggingface"
