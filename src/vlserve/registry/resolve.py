"""Resolve the launch parameters (name, engine, format, size, quantization) to exactly one spec,
or explain which values are valid."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from vlserve.errors import SpecNotFound
from vlserve.registry.schema import KNOWN_ENGINES, FamilySpec, ModelSpec, Quantization
from vlserve.registry.store import Registry


@dataclass(frozen=True)
class ResolvedSpec:
    family: FamilySpec
    spec: ModelSpec
    engine: str  # canonical spelling, e.g. "vLLM"
    quantization: Quantization  # canonical spelling, e.g. "Int4"

    @property
    def model_name(self) -> str:
        return self.family.model_name

    def describe(self) -> str:
        s = self.spec
        return f"{self.model_name} {s.model_format} {s.size_label}B {self.quantization} on {self.engine}"


def canonical_engine(engine: str) -> str:
    for known in KNOWN_ENGINES:
        if known.lower() == engine.strip().lower():
            return known
    raise SpecNotFound(f"engine {engine!r} is not known; choose one of {', '.join(KNOWN_ENGINES)}", param="model_engine")


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


def _same_size(size: int | float | str, spec: ModelSpec) -> bool:
    try:
        return float(str(size).replace("_", ".")) == float(spec.model_size_in_billions)
    except ValueError:
        return False


def _find_family(registry: Registry, name: str) -> FamilySpec:
    families = registry.families()
    if name in families:
        return families[name]
    by_lower = {n.lower(): f for n, f in families.items()}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name, list(families), n=3, cutoff=0.5)
    hint = f"; closest names: {_join(close)}" if close else f"; registered models: {_join(sorted(families))}"
    raise SpecNotFound(f"model {name!r} is not registered{hint}", param="model_name")


def _pick_quantization(family: FamilySpec, spec: ModelSpec, engine: str, quantization: str | None) -> Quantization:
    allowed = spec.engines[engine]
    label = f"{family.model_name} {spec.model_format} {spec.size_label}B"
    if quantization is None:
        return "none" if "none" in allowed else allowed[0]
    canonical = next((q for q in spec.quantizations if q.lower() == quantization.strip().lower()), None)
    if canonical is None:
        raise SpecNotFound(
            f"{label} quantizations are {_join(spec.quantizations)} (got {quantization!r})", param="quantization"
        )
    if canonical not in allowed:
        others = [e for e, qs in spec.engines.items() if canonical in qs]
        suggestion = f"; use --model-engine {others[0]} for {canonical}" if others else ""
        raise SpecNotFound(
            f"{engine} serves {label} only with quantization {_join(allowed)}, not {canonical}"
            f" (use --quantization {allowed[0]}{suggestion})",
            param="quantization",
        )
    return canonical


def _candidates(family: FamilySpec, model_format: str | None, size) -> list[ModelSpec]:
    specs = family.model_specs
    formats = list(dict.fromkeys(s.model_format for s in specs))
    if model_format is not None:
        specs = [s for s in specs if s.model_format.lower() == model_format.strip().lower()]
        if not specs:
            raise SpecNotFound(
                f"{family.model_name} formats are {_join(formats)} (got {model_format!r})", param="model_format"
            )
    if size is not None:
        sizes = list(dict.fromkeys(s.size_label for s in specs))
        fmt = f" {model_format.strip().lower()}" if model_format else ""
        specs = [s for s in specs if _same_size(size, s)]
        if not specs:
            raise SpecNotFound(
                f"{family.model_name}{fmt} sizes are {_join(sizes)} (got {size})", param="model_size_in_billions"
            )
    return specs


def resolve(
    registry: Registry,
    *,
    model_name: str,
    model_engine: str,
    model_format: str | None = None,
    model_size_in_billions: int | float | str | None = None,
    quantization: str | None = None,
) -> ResolvedSpec:
    """The one spec these parameters name; None means "any" (the first match in the family file's order)."""
    engine = canonical_engine(model_engine)
    family = _find_family(registry, model_name)
    specs = _candidates(family, model_format, model_size_in_billions)
    served = [s for s in specs if engine in s.engines]
    if not served:
        engines = _join(sorted({e for s in specs for e in s.engines}))
        raise SpecNotFound(f"{engine} cannot serve this {family.model_name} spec; use one of: {engines}", param="model_engine")
    if quantization is not None and len(served) > 1:
        matching = [s for s in served if any(q.lower() == quantization.strip().lower() for q in s.quantizations)]
        served = matching or served
    spec = served[0]
    return ResolvedSpec(family, spec, engine, _pick_quantization(family, spec, engine, quantization))
