"""The page's pure JS logic, run in the browser on the modules the server serves: which launch choices the
registry allows (and why the others are refused), engine options, SSE parsing and the chat request."""

from __future__ import annotations

import json

import httpx
import pytest
from ui_helpers import needs_browser

pytestmark = needs_browser


@pytest.fixture
def js(page):
    """Run `body` (an async function body) with the UI's modules imported as choices, api and conversation."""
    page.goto("/ui")

    def run(body: str, arg=None):
        script = f"""async (arg) => {{
            const choices = await import("/ui/static/js/choices.js");
            const api = await import("/ui/static/js/api.js");
            const conversation = await import("/ui/static/js/conversation.js");
            {body}
        }}"""
        return page.evaluate(script, arg)

    return run


@pytest.fixture
def family(server) -> dict:
    return httpx.get(f"{server.url}/v1/model_registrations/LLM/InternVL2.5").json()


def options(result: dict, field: str) -> dict[str, str]:
    """value -> "" when it can be picked, else the reason it cannot."""
    return {o["value"]: o["why"] for o in result["options"][field]}


def test_vllm_serves_pytorch_only_without_quantization(js, family):
    result = js("return choices.choices(arg, {engine: 'vLLM', format: 'pytorch', size: '8', quantization: '4-bit'});",
                family)
    quants = options(result, "quantization")
    assert quants["none"] == ""
    assert quants["4-bit"] == quants["8-bit"] == "vLLM serves pytorch only with quantization none"
    assert quants["Int4"] == "InternVL2.5 pytorch 8B quantizations are 4-bit, 8-bit, none"
    assert result["pick"] == {"engine": "vLLM", "format": "pytorch", "size": "8", "quantization": "none"}
    assert result["spec"]["model_id"] == "OpenGVLab/InternVL2_5-8B"


def test_awq_sizes_and_quantization_follow_the_registry(js, family):
    result = js("return choices.choices(arg, {engine: 'Transformers', format: 'awq', size: '1'});", family)
    sizes = options(result, "size")
    assert sizes["1"] == sizes["2"] == "InternVL2.5 awq sizes are 4, 8, 26, 38, 78"
    assert all(sizes[s] == "" for s in ("4", "8", "26", "38", "78"))
    assert result["pick"] == {"engine": "Transformers", "format": "awq", "size": "4", "quantization": "Int4"}


def test_what_the_server_cannot_run_is_refused_with_the_reason(js, family):
    runnable = {"Transformers": [{"model_format": "pytorch", "model_size_in_billions": 1, "quantizations": ["none"]}]}
    result = js("return choices.choices(arg.family, {engine: 'vLLM', quantization: '8-bit'}, arg.runnable);",
                {"family": family, "runnable": runnable})
    assert "not installed on this server" in options(result, "engine")["vLLM"]
    assert options(result, "format")["awq"] == "Transformers cannot run awq on this server"
    assert options(result, "size")["2"] == "Transformers cannot run pytorch 2B on this server"
    assert options(result, "quantization")["8-bit"] == "Transformers cannot run 8-bit on this server"
    assert result["pick"] == {"engine": "Transformers", "format": "pytorch", "size": "1", "quantization": "none"}


def test_a_custom_family_with_engines_per_size(js, family):
    spec = family["model_specs"][0]
    custom = {**family, "model_name": "MyVL", "model_specs": [
        {**spec, "engines": {"Transformers": ["none", "8-bit"]}},
        {**family["model_specs"][1], "engines": {"vLLM": ["none"], "Transformers": ["none"]}},
    ]}
    result = js("return choices.choices(arg, {engine: 'vLLM', size: '1'});", custom)
    assert options(result, "size")["1"] == "vLLM cannot serve pytorch 1B; use Transformers"
    assert result["pick"]["size"] == "2"
    result = js("return choices.choices(arg, {engine: 'Transformers', size: '2', quantization: '8-bit'});", custom)
    assert options(result, "quantization")["8-bit"] == "Transformers serves pytorch 2B only with quantization none"


def test_engine_options_are_typed_like_the_cli(js):
    parsed = js("return choices.parseOptions(arg);",
                "max_model_len=8192\n--enforce-eager = true\n\n# a comment\ndtype=float32\nlimit=null\nlist=[1, 2]")
    assert parsed == {"max_model_len": 8192, "enforce_eager": True, "dtype": "float32", "limit": None, "list": [1, 2]}
    error = js("try { choices.parseOptions('a=1\\nnonsense'); } catch (e) { return e.message; }")
    assert error == 'engine options line 2: write key=value (got "nonsense")'
    assert js("return [choices.scalar('auto'), choices.scalar('none'), choices.scalar('2')];") == ["auto", None, 2]


def test_sse_parser_joins_split_events(js):
    events = js("""
        const parser = new api.SseParser();
        return [parser.push('data: {"a"'), parser.push(':1}\\r\\n\\r\\ndata: x\\ndata: y\\n\\n: comment\\n\\ndata: [DO'),
                parser.push('NE]\\r'), parser.push('\\n'), parser.flush()];""")
    assert events == [[], ['{"a":1}', "x\ny"], [], [], ["[DONE]"]]


def test_stream_chunks_survive_utf8_split_inside_a_character(js):
    chunks = [{"choices": [{"index": 0, "delta": {"content": "你好, world"}}]}, {"choices": [], "usage": {"total_tokens": 3}}]
    body = "".join(f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    got = js("""
        const bytes = new TextEncoder().encode(arg);
        const cut = bytes.indexOf(0xe4) + 1;  // inside the three bytes of 你
        const stream = new ReadableStream({start(c) { c.enqueue(bytes.slice(0, cut)); c.enqueue(bytes.slice(cut)); c.close(); }});
        const out = [];
        for await (const chunk of api.readChunks(new Response(stream))) out.push(chunk);
        return out;""", body)
    assert got == chunks


def test_an_error_chunk_ends_the_stream_with_its_message(js):
    body = 'data: {"choices":[]}\n\ndata: {"error":{"message":"engine failed","code":500}}\n\ndata: [DONE]\n\n'
    message = js("""
        try { for await (const c of api.readChunks(new Response(arg))) {} } catch (e) { return [e.message, e.status]; }""",
                 body)
    assert message == ["engine failed", 500]


def test_chat_request_keeps_images_in_history(js):
    body = js("""return conversation.chatRequest({
        model: "m", system: "be brief", temperature: 0, maxTokens: 64, tiles: {mode: "custom", maxTiles: 4},
        history: [
          {role: "user", text: "what?", images: [{url: "data:image/png;base64,AAA", detail: "low"}]},
          {role: "assistant", text: "a cat"},
          {role: "user", text: "and now?", images: []}]});""")
    assert body == {
        "model": "m", "stream": True, "stream_options": {"include_usage": True}, "temperature": 0, "max_tokens": 64,
        "max_tiles": 4,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA", "detail": "low"}},
                {"type": "text", "text": "what?"}]},
            {"role": "assistant", "content": "a cat"},
            {"role": "user", "content": "and now?"},
        ],
    }
    usage = js("return conversation.usageText({prompt_tokens: 5, completion_tokens: 2, total_tokens: 7}, 1.25);")
    assert usage == "5 prompt + 2 completion = 7 tokens · 1.3 s"
