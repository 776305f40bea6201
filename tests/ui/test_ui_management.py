"""The management views against the real server: launch choices in the form, a refused launch, the cache, family
registrations, and the API-key prompt (the key check is played by the browser's request routing, so the test does
not depend on how the server is configured)."""

from __future__ import annotations

import json

import httpx
from ui_helpers import expect, needs_browser

pytestmark = needs_browser

BOTH_ENGINES = {  # GET /v1/engines as a server with vLLM installed would answer (for the 1B and 4B specs)
    "Transformers": [{"model_name": "InternVL2.5", "model_format": "pytorch", "model_size_in_billions": 1,
                      "quantizations": ["4-bit", "8-bit", "none"]}],
    "vLLM": [{"model_name": "InternVL2.5", "model_format": "pytorch", "model_size_in_billions": 1, "quantizations": ["none"]},
             {"model_name": "InternVL2.5", "model_format": "awq", "model_size_in_billions": 4, "quantizations": ["Int4"]}],
}


def test_the_form_offers_only_what_the_registry_allows(page):
    page.route("**/v1/engines/InternVL2.5", lambda route: route.fulfill(json=BOTH_ENGINES))
    page.goto("/ui#launch")
    page.select_option("#launch-engine", "vLLM")
    page.select_option("#launch-format", "pytorch")
    page.select_option("#launch-size", "1")
    quantization = page.locator("#launch-quantization")
    expect(quantization).to_have_value("none")
    for refused in ("4-bit", "8-bit", "Int4"):
        expect(quantization.locator(f"option[value='{refused}']")).to_be_disabled()
    expect(page.locator("[data-why=quantization]")).to_contain_text("4-bit, 8-bit: vLLM serves pytorch only with quantization none")
    expect(page.locator("#launch-size option[value='2']")).to_be_disabled()  # this server cannot run it
    page.select_option("#launch-format", "awq")
    expect(page.locator("#launch-size")).to_have_value("4")
    expect(page.locator("#launch-quantization")).to_have_value("Int4")
    expect(page.locator("[data-why=size]")).to_contain_text("1, 2: InternVL2.5 awq sizes are 4, 8, 26, 38, 78")
    expect(page.locator("#launch-summary")).to_have_text("InternVL2.5 awq 4B Int4 on vLLM · OpenGVLab/InternVL2_5-4B-AWQ")


def test_a_refused_launch_shows_the_servers_reason(page, server, tmp_path):
    page.goto("/ui#launch")
    page.select_option("#launch-engine", "Transformers")
    page.fill("#launch-path", str(tmp_path / "no-such-checkpoint"))
    page.click("#launch-submit")
    status = page.locator("#launch-status")
    expect(status).to_have_attribute("data-status", "error")
    expect(status).to_contain_text("no-such-checkpoint")
    page.reload()
    page.fill("#launch-options", "this is not an option")
    page.click("#launch-submit")
    expect(page.locator("#launch-watch-title")).to_have_text("Launch refused")
    expect(status).to_have_text('engine options line 1: write key=value (got "this is not an option")')
    assert server.services.host.list() == []


def test_cached_models_are_listed_and_removed(page, ui_home):
    folder = ui_home / "cache" / "huggingface" / "OpenGVLab--InternVL2_5-1B"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\0" * 2500)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto("/ui#cache")
    row = page.locator("#cache-rows tr[data-model-id='OpenGVLab/InternVL2_5-1B']")
    expect(row).to_contain_text("huggingface")
    expect(row).to_contain_text("2.5 KB")
    expect(row).to_contain_text("partial")
    row.get_by_role("button", name="Remove").click()
    expect(row).to_have_count(0)
    expect(page.locator("#cache-empty")).to_be_visible()
    assert not folder.exists()


def test_a_custom_family_is_registered_launchable_and_unregistered(page, server):
    family = httpx.get(f"{server.url}/v1/model_registrations/LLM/InternVL2.5").json()
    mine = {key: family[key] for key in ("model_family", "context_length", "model_lang", "model_ability")}
    mine |= {"model_name": "MyVL", "model_specs": family["model_specs"][:2]}
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto("/ui#families")
    page.fill("#register-text", json.dumps(mine))
    page.uncheck("#register-persist")
    page.click("#register-form button[type=submit]")
    row = page.locator("#families-rows tr[data-name='MyVL']")
    expect(row).to_contain_text("no")
    page.click("#tabs a[data-tab=launch]")
    page.select_option("#launch-family", "MyVL")
    expect(page.locator("#launch-family option[value='MyVL']")).to_have_text("MyVL (yours)")
    expect(page.locator("#launch-size option")).to_have_text(["1", "2"])  # its own specs only
    page.click("#tabs a[data-tab=families]")
    row.get_by_role("button", name="Unregister").click()
    expect(row).to_have_count(0)
    expect(page.locator("#families-rows tr[data-name='InternVL2.5'] button")).to_have_count(0)  # built-in: kept


def test_a_401_asks_for_a_key_and_every_request_then_carries_it(page):
    seen: list[tuple[str, str | None]] = []

    def guard(route):
        auth = route.request.headers.get("authorization")
        seen.append((route.request.url, auth))
        if auth != "Bearer s3cret":
            error = {"message": "an API key is required", "type": "authentication_error", "param": None, "code": 401}
            return route.fulfill(status=401, json={"error": error})
        return route.continue_()

    page.route("**/v1/**", guard)
    page.goto("/ui#launch")  # the page and its scripts load without a key
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#key-reason")).to_contain_text("an API key is required")
    expect(page.locator("#launch-family option")).to_have_count(0)  # nothing shown without the key
    page.fill("#key-input", "s3cret")
    page.click("#key-ok")
    expect(dialog).to_be_hidden()
    expect(page.locator("#launch-family")).to_have_value("InternVL2.5")
    expect(page.locator("#key-button")).to_have_text("API key ✓")
    assert page.evaluate("sessionStorage.getItem('vlserve.apiKey')") == "s3cret"
    first_ok = next(i for i, (_, auth) in enumerate(seen) if auth)
    page.click("#tabs a[data-tab=cache]")
    expect(page.locator("#cache-empty")).to_be_visible()
    assert all(auth == "Bearer s3cret" for _, auth in seen[first_ok:]), seen


def test_declining_the_key_stops_asking_until_the_button_is_used(page):
    page.route("**/v1/**", lambda route: route.fulfill(status=401, json={"error": {"message": "key needed"}}))
    page.goto("/ui#models")
    expect(page.locator("#key-dialog")).to_be_visible()
    page.locator("#key-dialog").get_by_role("button", name="Cancel").click()
    expect(page.locator("#models-empty")).to_contain_text("Cannot list models: key needed")
    page.wait_for_timeout(2500)  # a polling round: no new dialog
    expect(page.locator("#key-dialog")).to_be_hidden()
    page.click("#key-button")
    expect(page.locator("#key-dialog")).to_be_visible()


def test_launch_progress_is_watched_and_can_be_cancelled(page):
    """A hub download is played by request routing: progress shows, cancel calls the API, the end is reported."""
    state = {"cancelled": False}

    def describe(route):
        if state["cancelled"]:
            return route.fulfill(status=404, json={"error": {"message": "model 'slow' is not running"}})
        return route.fulfill(json={"id": "slow", "status": "downloading", "progress": 0.378, "error": None})

    def cancel(route):
        state["cancelled"] = True
        route.fulfill(json=None)

    page.route("**/v1/models?wait_ready=false", lambda route: route.fulfill(json={"model_uid": "slow"}))
    page.route("**/v1/models/slow", describe)
    page.route("**/v1/models/slow/cancel", cancel)
    page.goto("/ui#launch")
    page.click("#launch-submit")
    expect(page.locator("#launch-watch-title")).to_have_text("slow")
    expect(page.locator("#launch-status")).to_have_text("downloading… 38%")
    page.click("#launch-cancel")
    expect(page.locator("#launch-status")).to_have_text("slow is no longer running (cancelled or terminated)")
    expect(page.locator("#launch-cancel")).to_be_hidden()
    assert state["cancelled"]
