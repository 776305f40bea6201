"""Structured output over HTTP, through the openai SDK unchanged: `.parse()` with a pydantic model, `json_object`,
vLLM's `structured_outputs` extra field; on the session's random-weight twin, whose free output is noise."""

from __future__ import annotations

import json
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field


class Sighting(BaseModel):
    animal: Literal["cat", "dog", "bird"]
    count: int = Field(ge=0, le=20)
    outdoors: bool
    note: str = Field(max_length=8)


@pytest.fixture(scope="module")
def client(live, model_uid) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="not-needed", max_retries=0, timeout=300)


def test_sdk_parse_with_a_pydantic_model_at_temperature_one(client, model_uid):
    for seed in range(3):
        completion = client.chat.completions.parse(
            model=model_uid, messages=[{"role": "user", "content": "What did you see?"}], response_format=Sighting,
            temperature=1.0, seed=seed, max_tokens=80,
        )  # fmt: skip
        parsed = completion.choices[0].message.parsed
        assert isinstance(parsed, Sighting) and completion.choices[0].finish_reason == "stop"


def test_json_object_is_json_as_far_as_it_goes(client, model_uid):
    """Any JSON object allows free-text keys and values, which a random-weight twin rarely closes within a budget
    (the schema tests bound them): the output is an object's start, and parses whenever it finished."""
    completion = client.chat.completions.create(
        model=model_uid, messages=[{"role": "user", "content": "JSON please"}], temperature=1.0, seed=1,
        max_tokens=200, response_format={"type": "json_object"},
    )  # fmt: skip
    text, finish = completion.choices[0].message.content, completion.choices[0].finish_reason
    assert text.startswith("{") and finish in ("stop", "length")
    if finish == "stop":
        assert isinstance(json.loads(text), dict)
    free = client.chat.completions.create(model=model_uid, messages=[{"role": "user", "content": "JSON please"}],
                                          temperature=1.0, seed=1, max_tokens=20)  # fmt: skip
    assert not free.choices[0].message.content.startswith("{")  # the twin's own output is not JSON


def test_choice_and_regex_on_chat_and_completions(client, model_uid):
    chat = client.chat.completions.create(
        # max_tokens above the longest choice's 13 characters: at temperature 1 a random twin may spell it a
        # character a token (the grammar allows any tokenization), and 10 tokens cut it short (a CI flake)
        model=model_uid, messages=[{"role": "user", "content": "Yes or no?"}], temperature=1.0, max_tokens=16,
        extra_body={"structured_outputs": {"choice": ["yes", "no", "maybe (later)"]}},
    )  # fmt: skip
    assert chat.choices[0].message.content in ("yes", "no", "maybe (later)")
    completion = client.completions.create(model=model_uid, prompt="Code:", max_tokens=12, temperature=1.0,
                                           extra_body={"structured_outputs": {"regex": r"\d{4}"}})  # fmt: skip
    assert len(completion.choices[0].text) == 4 and completion.choices[0].text.isdigit()


def test_streamed_structured_output_is_the_same(client, model_uid):
    kwargs = {"model": model_uid, "messages": [{"role": "user", "content": "JSON"}], "temperature": 1.0, "seed": 9,
              "max_tokens": 60, "response_format": {"type": "json_object"}}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = client.chat.completions.create(**kwargs, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
