"""POST /v1/completions (raw text, no chat template) against the session's twin on the real Transformers engine,
through the clients that use it unchanged: the openai SDK, xinference-client's `generate`, litellm's
`text_completion`; and raw HTTP for what they do not send."""

from __future__ import annotations

import json

import openai
import pytest
from api_helpers import assert_openai_error

from vlserve.families.internvl2_5.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def client(live, model_uid) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="not-needed", max_retries=0, timeout=120)


def test_raw_text_goes_in_without_the_chat_template(client, model_uid, twin_1b):
    completion = client.completions.create(model=model_uid, prompt="The cat sat on", max_tokens=5, temperature=0)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    choice = completion.choices[0]
    assert choice.index == 0 and choice.finish_reason in ("stop", "length") and isinstance(choice.text, str)
    raw_ids = load_tokenizer(twin_1b)("The cat sat on", add_special_tokens=True)["input_ids"]
    assert completion.usage.prompt_tokens == len(raw_ids)  # the text's own tokens: no template around them
    chat = client.chat.completions.create(model=model_uid, messages=[{"role": "user", "content": "The cat sat on"}],
                                          max_tokens=1)  # fmt: skip
    assert chat.usage.prompt_tokens > completion.usage.prompt_tokens + 10  # the chat template's system prompt etc.
    again = client.completions.create(model=model_uid, prompt="The cat sat on", max_tokens=5, temperature=0)
    assert again.choices[0].text == choice.text


def test_default_max_tokens_is_sixteen(client, model_uid):
    completion = client.completions.create(model=model_uid, prompt="Once upon a time", extra_body={"ignore_eos": True})
    assert completion.usage.completion_tokens == 16 and completion.choices[0].finish_reason == "length"


def test_prompt_list_n_and_echo_number_the_choices(client, model_uid):
    prompts = ["Hello", "Bonjour tout"]
    completion = client.completions.create(model=model_uid, prompt=prompts, n=2, max_tokens=3, temperature=0.8,
                                           seed=1, echo=True)  # fmt: skip
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    for choice in completion.choices:
        assert choice.text.startswith(prompts[choice.index // 2])
    lone = [client.completions.create(model=model_uid, prompt=p, max_tokens=3).usage.prompt_tokens for p in prompts]
    assert completion.usage.prompt_tokens == sum(lone)


def test_streaming_gives_the_same_text_then_usage(client, model_uid):
    whole = client.completions.create(model=model_uid, prompt="Count: one, two,", max_tokens=6, temperature=0)
    chunks = list(client.completions.create(model=model_uid, prompt="Count: one, two,", max_tokens=6, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))  # fmt: skip
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"suffix": "end"}, "suffix", "fill in the middle"),
    ({"prompt": [1, 2, 3]}, "prompt", "token ids"),
    ({"prompt": []}, "prompt", "empty list"),
    ({"logprobs": 2, "echo": True}, "logprobs", "with echo"),
    ({"logprobs": 21}, "logprobs", "less than or equal to 20"),
    ({"best_of": 3}, "best_of", "best_of 3 differs from n 1"),
    ({"model": "nope"}, "model", "nope"),
])  # fmt: skip
def test_what_is_not_served_is_a_clear_400(http, model_uid, body, param, message):
    response = http.post("/v1/completions", json={"model": model_uid, "prompt": "Hi", **body})
    assert_openai_error(response, 404 if param == "model" else 400)
    error = response.json()["error"]
    assert message in error["message"] and (param == "model" or error["param"] == param)


def test_a_prompt_longer_than_the_context_is_a_400(http, model_uid):
    response = http.post("/v1/completions", json={"model": model_uid, "prompt": "word " * 20000, "max_tokens": 4})
    assert_openai_error(response, 400)
    assert "tokens" in response.json()["error"]["message"]


def test_xinference_client_generate(live, model_uid):
    from xinference_client import RESTfulClient

    handle = RESTfulClient(live.url).get_model(model_uid)
    result = handle.generate("The sky is", generate_config={"max_tokens": 4, "temperature": 0})
    assert result["object"] == "text_completion" and result["choices"][0]["text"]
    streamed = list(handle.generate("The sky is", generate_config={"max_tokens": 4, "temperature": 0, "stream": True}))
    assert "".join(c["choices"][0]["text"] for c in streamed if c["choices"]) == result["choices"][0]["text"]


def test_litellm_text_completion(live, model_uid, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no internet: litellm must not fetch its price list
    import litellm

    response = litellm.text_completion(model=f"text-completion-openai/{model_uid}", prompt="The sky is",
                                       api_base=f"{live.url}/v1", api_key="not-needed", max_tokens=4, temperature=0)  # fmt: skip
    direct = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x").completions.create(
        model=model_uid, prompt="The sky is", max_tokens=4, temperature=0)
    assert response.choices[0].text == direct.choices[0].text
    assert json.loads(response.model_dump_json())["usage"]["prompt_tokens"] == direct.usage.prompt_tokens


def test_logprobs_in_the_completions_shape(client, model_uid):
    completion = client.completions.create(model=model_uid, prompt="Numbers: 1, 2,", max_tokens=4, temperature=0,
                                           logprobs=2, extra_body={"ignore_eos": True})  # fmt: skip
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 4
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(4)]
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert len(top) <= 2 and max(top.values()) == logprob and top.get(token) == logprob  # greedy: the best
    chunks = list(client.completions.create(model=model_uid, prompt="Numbers: 1, 2,", max_tokens=4, temperature=0,
                                            logprobs=2, stream=True, extra_body={"ignore_eos": True}))  # fmt: skip
    assert [lp for c in chunks if c.choices[0].logprobs for lp in c.choices[0].logprobs.token_logprobs] == \
        logprobs.token_logprobs  # fmt: skip
