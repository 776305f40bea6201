"""The chat view's own behaviour, with the model's answers played by the browser's request routing: images by
drag-and-drop and paste, Chinese and English text, usage, a refused request, and the tile budget per message.
(The real engine is exercised end to end in test_ui_end_to_end.py.)"""

from __future__ import annotations

import json

import pytest
from ui_helpers import expect, needs_browser

pytestmark = needs_browser

READY = {"object": "list", "data": [{
    "id": "fake", "object": "model", "model_name": "InternVL2.5", "model_engine": "Transformers",
    "model_format": "pytorch", "model_size_in_billions": 1, "quantization": "none", "replica": 1, "n_gpu": None,
    "status": "ready", "progress": 1.0, "error": None, "device": "cpu", "dtype": "float32",
}]}
PNG_JS = """async () => {
    const canvas = new OffscreenCanvas(40, 30);
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#3a7"; ctx.fillRect(0, 0, 40, 30);
    const blob = await canvas.convertToBlob({type: "image/png"});
    const files = new DataTransfer();
    files.items.add(new File([blob], "drop.png", {type: "image/png"}));
    files.items.add(new File(["just text"], "notes.txt", {type: "text/plain"}));
    return files;
}"""


def sse(*chunks: dict) -> str:
    return "".join(f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def delta(text: str, finish: str | None = None) -> dict:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


@pytest.fixture
def chat(page):
    """The chat tab with one fake ready model; returns the list the chat requests' bodies are appended to."""
    bodies: list[dict] = []
    replies: list = []

    def answer(route):
        bodies.append(route.request.post_data_json)
        status, body = replies.pop(0)
        content_type = "text/event-stream" if status == 200 else "application/json"
        route.fulfill(status=status, body=body, headers={"Content-Type": f"{content_type}; charset=utf-8"})

    page.route("**/v1/models", lambda route: route.fulfill(json=READY))
    page.route("**/v1/chat/completions", answer)
    page.goto("/ui#chat")
    expect(page.locator("#chat-model")).to_have_value("fake")
    return bodies, replies


def test_dropped_and_pasted_images_are_previewed_and_sent(page, chat):
    bodies, replies = chat
    files = page.evaluate_handle(PNG_JS)
    page.dispatch_event("#chat-form", "drop", {"dataTransfer": files})
    expect(page.locator("#chat-attachments img")).to_have_count(1)
    expect(page.locator("#toast")).to_have_text("notes.txt is not an image")
    page.evaluate("""(files) => document.getElementById("chat-input").dispatchEvent(
        new ClipboardEvent("paste", {clipboardData: files, bubbles: true, cancelable: true}))""", files)
    expect(page.locator("#chat-attachments img")).to_have_count(2)
    page.locator("#chat-attachments .remove").first.click()
    expect(page.locator("#chat-attachments img")).to_have_count(1)

    replies.append((200, sse(delta("图中是一片"), delta("绿色。 A green field."),
                             {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                             {"choices": [], "usage": {"prompt_tokens": 300, "completion_tokens": 9, "total_tokens": 309}})))
    page.fill("#chat-input", "图里有什么？")
    page.press("#chat-input", "Enter")
    answer = page.locator(".turn.assistant").last
    expect(answer.locator(".text")).to_have_text("图中是一片绿色。 A green field.")
    expect(answer.locator(".meta")).to_contain_text("300 prompt + 9 completion = 309 tokens")
    [image, text] = bodies[0]["messages"][0]["content"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,") and text == {"type": "text", "text": "图里有什么？"}
    assert "max_tiles" not in bodies[0]


def test_a_refused_request_shows_why_and_leaves_the_history(page, chat):
    bodies, replies = chat
    replies.append((400, json.dumps({"error": {"message": "max_tokens 99999 leaves no room", "code": 400}})))
    page.fill("#chat-max-tokens", "99999")
    page.fill("#chat-input", "first question")
    page.click("#chat-send")
    failed = page.locator(".turn.assistant").last
    expect(failed).to_have_attribute("data-state", "error")
    expect(failed.locator(".meta")).to_have_text("error: max_tokens 99999 leaves no room")

    replies.append((200, sse(delta("ok", "length"), {"choices": [], "usage": None})))
    page.fill("#chat-max-tokens", "8")
    page.fill("#chat-system", "Answer briefly.")
    page.select_option("#chat-tiles", "custom")
    page.fill("#chat-max-tiles", "3")
    page.fill("#chat-input", "second question")
    page.click("#chat-send")
    expect(page.locator(".turn.assistant").last.locator(".meta")).to_contain_text("stopped at max tokens")
    assert bodies[1]["messages"] == [{"role": "system", "content": "Answer briefly."},
                                     {"role": "user", "content": "second question"}]
    assert bodies[1]["max_tiles"] == 3 and bodies[1]["max_tokens"] == 8


def test_a_stream_that_fails_midway_keeps_the_text_and_shows_the_error(page, chat):
    _, replies = chat
    replies.append((200, sse(delta("partial "), {"error": {"message": "the engine failed", "code": 500}})))
    page.fill("#chat-input", "hello")
    page.click("#chat-send")
    answer = page.locator(".turn.assistant").last
    expect(answer).to_have_attribute("data-state", "error")
    expect(answer.locator(".text")).to_have_text("partial ")
    expect(answer.locator(".meta")).to_have_text("error: the engine failed")
