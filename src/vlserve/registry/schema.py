"""The schema every family file (built-in or user-registered) must satisfy.

Field names follow Xinference's LLM registrations, so `GET /v1/model_registrations/LLM/{name}` answers what
xinference-client expects; `engines` and `model_family` are this project's additions that make the engine rules data.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vlserve.families import family_names

# Engines vlserve can run; family files may only name these (exact spelling, as shown to users).
KNOWN_ENGINES = ("Transformers", "vLLM")
Hub = Literal["huggingface", "modelscope"]
# Quantization labels as the model page spells them: 16-bit, bitsandbytes 8-bit / 4-bit at load, AWQ checkpoints
Quantization = Literal["none", "8-bit", "4-bit", "Int4"]
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)


def _canonical_quantization(value: Any) -> Any:
    """Quantization labels in any letter case ("int4", "NONE") as the model page spells them."""
    if isinstance(value, str):
        return next((q for q in QUANTIZATIONS if q.lower() == value.strip().lower()), value)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    model_format: str = Field(description="Weight format, e.g. pytorch or awq.")
    model_size_in_billions: int | float = Field(description="Parameter count in billions, as the page names it.")
    quantizations: list[Quantization] = Field(min_length=1, description="Quantizations this spec can be launched with.")
    model_id: str = Field(description="Repository id on Hugging Face.")
    model_hub_ids: dict[Hub, str] = Field(description="Repository id on each hub that has it.")
    engines: dict[str, list[Quantization]] = Field(
        min_length=1, description="Engine name -> the quantizations that engine serves for this spec."
    )
    architecture: str | None = Field(
        default=None, description="Reference checkpoint the family package uses for twins (e.g. InternVL2_5-1B)."
    )

    @field_validator("quantizations", mode="before")
    @classmethod
    def _quantization_spelling(cls, values: Any) -> Any:
        return [_canonical_quantization(v) for v in values] if isinstance(values, list) else values

    @field_validator("engines", mode="before")
    @classmethod
    def _engine_quantization_spelling(cls, engines: Any) -> Any:
        if not isinstance(engines, dict):
            return engines
        return {e: [_canonical_quantization(v) for v in q] if isinstance(q, list) else q for e, q in engines.items()}

    @field_validator("engines")
    @classmethod
    def _engines_known(cls, engines: dict[str, list[Quantization]]) -> dict[str, list[Quantization]]:
        unknown = sorted(set(engines) - set(KNOWN_ENGINES))
        if unknown:
            raise ValueError(f"unknown engine(s) {unknown}; known engines are {', '.join(KNOWN_ENGINES)}")
        return engines

    @model_validator(mode="after")
    def _engine_quantizations_exist(self) -> ModelSpec:
        for engine, quants in self.engines.items():
            extra = sorted(set(quants) - set(self.quantizations))
            if extra:
                raise ValueError(f"engine {engine} lists quantization(s) {extra} that the spec does not offer")
        if "huggingface" not in self.model_hub_ids:
            raise ValueError("model_hub_ids must include huggingface")
        return self

    @property
    def size_label(self) -> str:
        size = self.model_size_in_billions
        return str(int(size)) if float(size).is_integer() else str(size)


class FamilySpec(_Strict):
    model_name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
    model_family: str = Field(description="Implementation package under vlserve.families.")
    model_description: str = ""
    context_length: int = Field(gt=0)
    model_lang: list[str] = Field(min_length=1)
    model_ability: list[str] = Field(min_length=1)
    model_specs: list[ModelSpec] = Field(min_length=1)
    sources: list[str] = Field(
        default_factory=list, description="Where the facts in this file come from (model cards, public configs)."
    )

    @field_validator("model_family")
    @classmethod
    def _implementation_known(cls, value: str) -> str:
        if value not in family_names():  # the value of `model_family` selects the package under vlserve.families
            raise ValueError(f"model_family {value!r} is not implemented; choose one of {', '.join(family_names())}")
        return value
