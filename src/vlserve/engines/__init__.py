"""Engines behind one small protocol; each engine module imports its heavy libraries lazily."""

from __future__ import annotations

import importlib

from vlserve.engines.base import Engine, EngineFactory

# engine name -> module with a module-level `factory: EngineFactory`
_MODULES = {"Transformers": "vlserve.engines.transformers_engine", "vLLM": "vlserve.engines.vllm_engine"}


def get_factory(name: str) -> EngineFactory:
    return importlib.import_module(_MODULES[name]).factory


__all__ = ["Engine", "EngineFactory", "get_factory"]
