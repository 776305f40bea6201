"""Structured output requested over the API -> the engines' `Guide`: OpenAI's `response_format` (`json_object`,
`json_schema`, strict or not) and vLLM's extra field `structured_outputs` (`json`, `regex`, `choice`,
`json_object`). A schema is checked here (400 naming the problem); the engines compile it against their tokenizer."""

from __future__ import annotations

import json
import re
from typing import Any

from vlserve.engines.base import Guide
from vlserve.errors import InvalidRequest

_VLLM_KINDS = ("json", "regex", "choice", "json_object")


def guide_for(response_format: dict[str, Any] | None, structured_outputs: dict[str, Any] | None) -> Guide | None:
    from_format = _from_response_format(response_format)
    from_extra = _from_structured_outputs(structured_outputs)
    if from_format is not None and from_extra is not None:
        raise InvalidRequest("send response_format or structured_outputs, not both", param="structured_outputs")
    return from_format or from_extra


def _from_response_format(value: dict[str, Any] | None) -> Guide | None:
    kind = (value or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return Guide("json_object")
    if kind != "json_schema":
        raise InvalidRequest(f"response_format type {kind!r} is not supported; use text, json_object or json_schema",
                             param="response_format")  # fmt: skip
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or "schema" not in spec:
        raise InvalidRequest("response_format json_schema needs {'name': ..., 'schema': {...}}",
                             param="response_format.json_schema")  # fmt: skip
    return Guide("json", schema_text(spec["schema"], "response_format.json_schema.schema"))


def _from_structured_outputs(value: dict[str, Any] | None) -> Guide | None:
    if not value:
        return None
    given = [k for k in _VLLM_KINDS if value.get(k) not in (None, False)]
    if len(given) != 1:
        raise InvalidRequest(f"structured_outputs takes exactly one of {', '.join(_VLLM_KINDS)}",
                             param="structured_outputs")  # fmt: skip
    kind, spec = given[0], value[given[0]]
    param = f"structured_outputs.{kind}"
    if kind == "json":
        return Guide("json", schema_text(spec, param), param)
    if kind == "json_object":
        return Guide("json_object", "", param)
    if kind == "choice":
        if not isinstance(spec, list) or not spec or not all(isinstance(c, str) and c for c in spec):
            raise InvalidRequest("structured_outputs.choice is a list of non-empty strings", param=param)
        return Guide("regex", "(" + "|".join(re.escape(c) for c in spec) + ")", param)
    if not isinstance(spec, str) or not spec:
        raise InvalidRequest("structured_outputs.regex is a non-empty pattern", param=param)
    try:
        re.compile(spec)
    except re.error as exc:
        raise InvalidRequest(f"invalid regex: {exc}", param=param) from None
    return Guide("regex", spec, param)


def schema_text(schema: Any, param: str) -> str:
    """A JSON schema (object or text) as canonical text, checked to be a valid schema (400 naming why not)."""
    import jsonschema

    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"the JSON schema is not JSON: {exc}", param=param) from None
    if not isinstance(schema, dict):
        raise InvalidRequest("the JSON schema must be an object", param=param)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(f"invalid JSON schema: {exc.message}", param=param) from None
    return json.dumps(schema, sort_keys=True)
