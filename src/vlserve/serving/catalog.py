"""The catalog service: model registrations, which engines can run what, and the download cache — in the shapes
Xinference's REST API answers them, with this project's own fields added."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlserve import hub as model_files
from vlserve.engines import get_factory
from vlserve.engines.base import EngineFactory
from vlserve.errors import InvalidRequest, NotFound
from vlserve.registry import KNOWN_ENGINES, FamilySpec, ModelSpec, Registry, ResolvedSpec, parse_family
from vlserve.serving.protocol import RegisterBody


def _check_type(model_type: str) -> None:
    if model_type != "LLM":
        raise InvalidRequest(f"model_type {model_type!r} is not served here; only LLM", param="model_type")


class CatalogService:
    def __init__(self, registry: Registry, factory_for: Callable[[str], EngineFactory] = get_factory) -> None:
        self.registry = registry
        self.factory_for = factory_for

    # -- registrations -------------------------------------------------------------------------------------------

    def list_registrations(self, model_type: str, detailed: bool) -> list[dict[str, Any]]:
        _check_type(model_type)
        families = self.registry.families().values()
        if detailed:
            return [self._registration(f) for f in families]
        return [{"model_name": f.model_name, "is_builtin": self.registry.is_builtin(f.model_name)} for f in families]

    def get_registration(self, model_type: str, model_name: str) -> dict[str, Any]:
        _check_type(model_type)
        return self._registration(self.registry.get(model_name))

    def register(self, model_type: str, body: RegisterBody) -> None:
        _check_type(model_type)
        self.registry.register(parse_family(body.model))

    def unregister(self, model_type: str, model_name: str) -> None:
        _check_type(model_type)
        self.registry.unregister(model_name)

    def _registration(self, family: FamilySpec) -> dict[str, Any]:
        return {**family.model_dump(), "is_builtin": self.registry.is_builtin(family.model_name)}

    # -- engines ---------------------------------------------------------------------------------------------------

    def engines_for(self, model_name: str, model_type: str = "LLM") -> dict[str, list[dict[str, Any]]]:
        """Engine -> the (format, size, quantizations) it can launch here; engines not installed are left out."""
        _check_type(model_type)
        family = self.registry.get(model_name)
        result = {}
        for engine in KNOWN_ENGINES:
            try:
                factory = self.factory_for(engine)
            except ImportError:
                continue
            params = [p for spec in family.model_specs if (p := _engine_params(factory, family, spec, engine))]
            if params:
                result[engine] = params
        return result

    def vllm_supported(self) -> dict[str, list[str]]:
        """Xinference's listing of what the vLLM engine serves: chat models, and text-generation ones (none)."""
        names = [f.model_name for f in self.registry.families().values()
                 if any("vLLM" in spec.engines for spec in f.model_specs)]  # fmt: skip
        return {"chat": names, "generate": []}

    # -- cache -------------------------------------------------------------------------------------------------------

    def list_cached(self, model_name: str | None = None) -> dict[str, list[dict[str, Any]]]:
        rows = [self._cache_row(entry) for entry in model_files.list_cached()]
        return {"list": [r for r in rows if model_name in (None, r["model_name"])]}

    def remove_cached(self, model_id: str | None, hub: str | None, model_version: str | None) -> dict[str, bool]:
        if not model_id and not model_version:
            raise InvalidRequest("give model_id (e.g. OpenGVLab/InternVL2_5-1B) or model_version", param="model_id")
        model_files.remove_cached(model_id or self._model_id_of_version(model_version), hub=hub)
        return {"result": True}

    def cached_files(self, model_version: str | None, worker_ip: str | None) -> dict[str, Any]:
        """Xinference's deletable files of a cached model (what `DELETE /v1/cache/models` would remove)."""
        if not model_version:
            raise InvalidRequest("give model_version (name--<size>B--<format>--<quantization>)", param="model_version")
        model_id = self._model_id_of_version(model_version)
        folders = [entry.path for entry in model_files.list_cached() if entry.repo_id == model_id]
        paths = sorted(str(p) for folder in folders for p in [folder, *folder.rglob("*")])
        return {"model_version": model_version, "worker_ip": worker_ip, "paths": paths}

    def _cache_row(self, entry: model_files.CachedModel) -> dict[str, Any]:
        family, spec = self._spec_of_repo(entry.repo_id)
        path = str(entry.path)
        return {
            "model_id": entry.repo_id, "hub": entry.hub, "revision": entry.revision, "size_bytes": entry.size_bytes,
            "complete": entry.complete, "path": path, "model_file_location": path, "real_path": path,
            "model_name": family.model_name if family else None,
            "model_format": spec.model_format if spec else None,
            "model_size_in_billions": spec.model_size_in_billions if spec else None,
        }

    def _spec_of_repo(self, repo_id: str) -> tuple[FamilySpec | None, ModelSpec | None]:
        for family in self.registry.families().values():
            for spec in family.model_specs:
                if repo_id in spec.model_hub_ids.values():
                    return family, spec
        return None, None

    def _model_id_of_version(self, version: str) -> str:
        """Xinference's `name--<size>B--<format>--<quantization>` -> the spec's repository id."""
        parts = version.split("--")
        if len(parts) < 3 or not parts[1].endswith("B"):
            raise InvalidRequest(f"model_version {version!r} is not of the form name--<size>B--<format>[--<quant>]",
                                 param="model_version")
        family = self.registry.get(parts[0])
        for spec in family.model_specs:
            if spec.size_label == parts[1][:-1] and spec.model_format == parts[2]:
                return spec.model_id
        raise NotFound(f"{family.model_name} has no {parts[1]} {parts[2]} spec", param="model_version")


def _engine_params(factory: EngineFactory, family: FamilySpec, spec: ModelSpec, engine: str) -> dict[str, Any] | None:
    quantizations = [q for q in spec.engines.get(engine, []) if factory.supports(ResolvedSpec(family, spec, engine, q))[0]]
    if not quantizations:
        return None
    return {"model_name": family.model_name, "model_format": spec.model_format,
            "model_size_in_billions": spec.model_size_in_billions, "quantizations": quantizations}
