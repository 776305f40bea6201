"""The whole path in a real browser: launch an InternVL2.5-1B twin from the form into the real Transformers
engine, watch it become ready, chat with an uploaded image (streamed text, usage), stop a long answer, keep
images across turns, and terminate the model.

It also screenshots the chat view with images attached: into the test's tmp folder, or where VLSERVE_UI_SCREENSHOT
says (`VLSERVE_UI_SCREENSHOT=docs/ui-chat.png ./scripts/test.sh tests/ui/test_ui_end_to_end.py` refreshes the
README's copy), so a plain test run leaves the work tree as it was."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from ui_helpers import expect, needs_browser

pytestmark = needs_browser

UID = "ui-twin"
USAGE = re.compile(r"^\d+ prompt \+ \d+ completion = \d+ tokens · [\d.]+ s")


def picture(path: Path, hue: int) -> Path:
    """A small picture with shapes, so the previews show something recognisable."""
    image = Image.new("RGB", (320, 220), (235, 242, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 150, 320, 220), fill=(110, 170, 90))
    draw.ellipse((210, 20, 280, 90), fill=(250, 200, 60))
    draw.polygon([(40, 150), (110, 60), (180, 150)], fill=((hue * 3) % 256, 90, 160))
    draw.rectangle((150, 110, 230, 150), fill=(200, 70, 60))
    image.save(path)
    return path


def streamed_lengths(page, selector: str) -> None:
    """Record, in the page, each length the text of the newest `selector` element has while it streams."""
    page.evaluate("""(selector) => {
        window.__lengths = [];
        new MutationObserver(() => {
            const nodes = document.querySelectorAll(selector);
            const text = nodes.length ? nodes[nodes.length - 1].textContent : "";
            if (window.__lengths.at(-1) !== text.length) window.__lengths.push(text.length);
        }).observe(document.getElementById("chat-log"), {childList: true, subtree: true, characterData: true});
    }""", selector)


def launch_twin(page, twin_dir: Path) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/ui$"))
    page.click("#tabs a[data-tab=launch]")
    expect(page.locator("#launch-family option")).not_to_have_count(0)
    page.select_option("#launch-family", "InternVL2.5")
    page.select_option("#launch-engine", "Transformers")
    page.select_option("#launch-format", "pytorch")
    page.select_option("#launch-size", "1")
    page.select_option("#launch-quantization", "none")
    page.fill("#launch-uid", UID)
    page.fill("#launch-n-gpu", "none")
    page.fill("#launch-path", str(twin_dir))
    page.fill("#launch-options", "dtype=float32")
    with page.expect_request("**/v1/models?wait_ready=false") as launched:
        page.click("#launch-submit")
    body = launched.value.post_data_json
    assert body["model_size_in_billions"] == 1 and body["n_gpu"] is None and body["dtype"] == "float32"
    status = page.locator("#launch-status")
    expect(status).to_have_attribute("data-status", "ready", timeout=300_000)
    expect(status).to_contain_text("ready on cpu")
    assert page.eval_on_selector("#launch-progress", "p => p.value") == 1


def send(page, text: str, max_tokens: int) -> None:
    page.fill("#chat-max-tokens", str(max_tokens))
    page.fill("#chat-input", text)
    page.click("#chat-send")


def test_launch_chat_stop_and_terminate(page, server, twin_1b, tmp_path):
    page.on("dialog", lambda dialog: dialog.accept())
    launch_twin(page, twin_1b)

    # the live list shows it, with its spec, engine and placement
    page.click("#tabs a[data-tab=models]")
    row = page.locator(f"#models-rows tr[data-uid='{UID}']")
    expect(row).to_contain_text("InternVL2.5 1B pytorch none")
    expect(row).to_contain_text("Transformers")
    expect(row.locator(".badge")).to_have_text("ready")
    expect(row).to_contain_text("1 × cpu · CPU only")

    # chat: an uploaded image, streamed text, usage
    row.get_by_role("button", name="Chat").click()
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("#chat-model")).to_have_value(UID)
    page.fill("#chat-temperature", "0")
    page.set_input_files("#chat-files", str(picture(tmp_path / "hill.png", 1)))
    expect(page.locator("#chat-attachments img")).to_have_count(1)
    streamed_lengths(page, ".turn.assistant .text")
    with page.expect_request("**/v1/chat/completions") as asked:
        send(page, "Describe this picture.", 24)
    first = asked.value.post_data_json
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    [image, text] = first["messages"][0]["content"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,") and text["text"] == "Describe this picture."
    answer = page.locator(".turn.assistant").last
    expect(answer).to_have_attribute("data-state", "done", timeout=120_000)
    expect(answer.locator(".meta")).to_have_text(USAGE)
    lengths = page.evaluate("window.__lengths")
    assert len([n for n in lengths if n > 0]) > 1, f"the answer arrived in one piece, not streamed: {lengths}"
    expect(page.locator("#chat-attachments img")).to_have_count(0)
    expect(page.locator(".turn.user").first.locator(".images img")).to_have_count(1)

    # the next turn sends the earlier image again, with the low tile budget on its own image only
    page.set_input_files("#chat-files", str(picture(tmp_path / "second.png", 40)))
    page.select_option("#chat-tiles", "low")
    with page.expect_request("**/v1/chat/completions") as asked:
        send(page, "这张图里有什么？And in this one?", 16)
    messages = asked.value.post_data_json["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"][0]["image_url"] == first["messages"][0]["content"][0]["image_url"]
    assert messages[2]["content"][0]["image_url"]["detail"] == "low"
    expect(page.locator(".turn.assistant").last).to_have_attribute("data-state", "done", timeout=120_000)
    expect(page.locator(".turn.user").last).to_contain_text("这张图里有什么？")

    # the screenshot: a conversation with images, and one more attached in the composer
    page.select_option("#chat-tiles", "default")
    page.set_input_files("#chat-files", str(picture(tmp_path / "third.png", 80)))
    page.fill("#chat-input", "比较这三张图片。Compare the three pictures.")
    page.eval_on_selector("#chat-log", "log => { log.scrollTop = log.scrollHeight; }")
    screenshot = Path(os.environ.get("VLSERVE_UI_SCREENSHOT") or tmp_path / "ui-chat.png")
    page.screenshot(path=str(screenshot))
    assert Image.open(screenshot).size == (1280, 860)
    page.click("#chat-attachments .remove")
    expect(page.locator("#chat-attachments img")).to_have_count(0)

    # stop: a long answer is aborted in the page and on the server
    send(page, "Tell me a very long story.", 4000)
    long_answer = page.locator(".turn.assistant").last
    expect(long_answer.locator(".text")).not_to_be_empty(timeout=120_000)
    page.click("#chat-stop")
    expect(long_answer).to_have_attribute("data-state", "stopped")
    expect(page.locator("#chat-send")).to_be_enabled()
    stopped_at = long_answer.locator(".text").text_content()
    wait_until(lambda: server.services.host.in_flight(UID) == (0,), "the server kept generating after stop")
    time.sleep(1.0)
    assert long_answer.locator(".text").text_content() == stopped_at
    assert len(stopped_at) < 4000 * 3

    # terminate from the list
    page.click("#tabs a[data-tab=models]")
    page.locator(f"#models-rows tr[data-uid='{UID}']").get_by_role("button", name="Terminate").click()
    expect(page.locator(f"#models-rows tr[data-uid='{UID}']")).to_have_count(0)
    expect(page.locator("#models-empty")).to_be_visible()
    assert [r.uid for r in server.services.host.list()] == []


def wait_until(condition, message: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(message)
        time.sleep(0.1)
