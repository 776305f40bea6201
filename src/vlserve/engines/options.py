"""What every engine's launch options share: a pydantic model per engine whose field descriptions document each
option, one dtype alias table, and one way of refusing an unknown key or a bad value (an InvalidRequest naming the
option and what is valid, never a traceback from the engine)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from vlserve.errors import InvalidRequest

DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


def available_gib(fallback: float = 4.0) -> float:
    """Memory available to new allocations now (MemAvailable), in GiB; `fallback` where /proc/meminfo is missing.
    Engines size launch defaults from it (vLLM's CPU KV cache, the 4-bit prefill copy)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return fallback


def dtype_name(value: Any) -> Any:
    """A dtype as the user wrote it, in its canonical spelling (bf16 -> bfloat16); anything else unchanged."""
    if not isinstance(value, str):
        return value
    return DTYPE_ALIASES.get(value.lower(), value.lower())


class LaunchOptionsBase(BaseModel):
    """Launch options of one engine: subclasses declare the fields and set `engine`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    engine: ClassVar[str]

    @classmethod
    def parse(cls, options: dict[str, Any] | None) -> Any:
        options = dict(options or {})
        valid = list(cls.model_fields)
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise InvalidRequest(f"unknown {cls.engine} engine option(s) {', '.join(unknown)}; valid options are "
                                 f"{', '.join(valid)}", param=unknown[0])  # fmt: skip
        try:
            return cls.model_validate(options)
        except ValidationError as exc:
            errors = exc.errors()
            problems = "; ".join(_problem(e) for e in errors)
            first = str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else None
            raise InvalidRequest(f"invalid {cls.engine} engine option(s): {problems}", param=first) from None


def _problem(error: dict[str, Any]) -> str:
    where = ".".join(map(str, error["loc"]))
    message = str(error["msg"])
    if message.startswith("Value error, "):  # our own validators say the whole sentence after the option's name
        return f"{where} {message.removeprefix('Value error, ')}"
    return f"{where}: {message}"
