"""The Xinference management API through xinference-client's RESTfulClient, unchanged, and raw HTTP for the shapes
and status codes: launch (the seed's parameters + a twin's model_path), list, describe, chat, progress, instances,
terminate and relaunch, registrations, engines, cache, cluster auth; and every other method of the client, which
gets a 400 saying why it is not served (other model types' calls, Xinference-only management)."""

from __future__ import annotations

import json
import time

import pytest
from api_helpers import SEED_LAUNCH, assert_openai_error, png_data_uri
from xinference_client import RESTfulClient
from xinference_client.client.restful import restful_client as handles


@pytest.fixture(scope="module")
def xclient(live, model_uid) -> RESTfulClient:
    return RESTfulClient(live.url)


def image_message(text: str = "What is in the image?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": png_data_uri()}}]}]


def test_list_describe_and_chat_with_the_session_model(xclient, model_uid):
    models = xclient.list_models()
    assert model_uid in models and models[model_uid]["model_name"] == "InternVL2.5"
    assert models[model_uid]["model_engine"] == "Transformers" and models[model_uid]["status"] == "ready"
    description = xclient.describe_model(model_uid)
    for key, value in {"model_type": "LLM", "model_format": "pytorch", "model_size_in_billions": 1,
                       "quantization": "none", "context_length": 16384, "replica": 1}.items():
        assert description[key] == value
    assert description["model_ability"] == ["chat", "vision"] and description["model_lang"] == ["en", "zh"]
    answer = xclient.get_model(model_uid).chat(messages=image_message(), generate_config={"max_tokens": 5})
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["usage"]["prompt_tokens"] > 256
    chunks = list(xclient.get_model(model_uid).chat(messages=image_message(),
                                                    generate_config={"max_tokens": 3, "stream": True}))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant" and chunks[-1]["choices"][0]["finish_reason"]


def test_launch_two_at_once_terminate_and_relaunch_the_same_uid(xclient, http, twin_1b, model_uid):
    uid = xclient.launch_model(**SEED_LAUNCH, model_path=str(twin_1b))
    assert uid == "InternVL2.5-1"  # the model name is taken by the session model
    assert set(xclient.list_models()) == {model_uid, uid}
    for served in (model_uid, uid):  # both models answer
        assert xclient.get_model(served).chat(messages=image_message(), generate_config={"max_tokens": 2})["choices"]
    assert xclient.get_launch_model_progress(uid)["progress"] == 1.0
    [instance] = xclient.get_instance_info(model_name="InternVL2.5", model_uid=uid)
    assert instance["status"] == "READY" and instance["model_version"] == "InternVL2.5--1B--pytorch--none"
    xclient.terminate_model(uid)
    assert uid not in xclient.list_models()
    assert_openai_error(http.get(f"/v1/models/{uid}"), 404, "not_found_error")

    body = {**SEED_LAUNCH, "model_uid": uid, "model_path": str(twin_1b), "replica": 2, "max_batch_size": 2}
    response = http.post("/v1/models", params={"wait_ready": "false"}, json=body)
    assert response.status_code == 200 and response.json() == {"model_uid": uid}
    while (state := http.get(f"/v1/models/{uid}").json())["status"] != "ready":
        assert state["status"] in ("downloading", "loading"), state
        time.sleep(0.1)
    assert state["replica"] == 2 and state["engine_options"] == {"max_batch_size": 2}
    assert http.get("/ready").status_code == 200
    assert http.delete(f"/v1/models/{uid}").status_code == 200
    assert set(xclient.list_models()) == {model_uid}


def test_launch_errors_are_400s_with_the_registrys_messages(xclient, http, twin_1b, model_uid):
    cases = [
        ({**SEED_LAUNCH, "model_size_in_billions": 3}, "model_size_in_billions", "sizes are 1, 2, 4, 8, 26, 38, 78"),
        ({**SEED_LAUNCH, "model_engine": "vLLM", "quantization": "4-bit"}, "quantization", "only with quantization none"),
        ({**SEED_LAUNCH, "model_engine": "llama.cpp"}, "model_engine", "choose one of Transformers, vLLM"),
        ({**SEED_LAUNCH, "model_name": "InternVL9"}, "model_name", "is not registered"),
        ({**SEED_LAUNCH, "model_path": "/no/such/dir"}, "model_path", "is not a directory"),
        ({**SEED_LAUNCH, "model_path": str(twin_1b), "max_batch_sise": 2}, "max_batch_sise", "unknown Transformers"),
        ({**SEED_LAUNCH, "worker_ip": "10.0.0.2"}, "worker_ip", "not supported"),
        ({**SEED_LAUNCH, "replica": 0}, "replica", "greater than or equal to 1"),
    ]
    for body, param, message in cases:
        error = assert_openai_error(http.post("/v1/models", json=body), 400, "invalid_request_error")
        assert error["param"] == param and message in error["message"], (body, error)
    taken = http.post("/v1/models", json={**SEED_LAUNCH, "model_uid": model_uid, "model_path": str(twin_1b)})
    assert "already in use" in assert_openai_error(taken, 409, "conflict_error")["message"]
    with pytest.raises(RuntimeError, match="sizes are 1, 2, 4"):  # xinference-client shows the reason (`detail`)
        xclient.launch_model(**{**SEED_LAUNCH, "model_size_in_billions": 3})
    assert set(xclient.list_models()) == {model_uid}  # failed launches leave nothing behind


def test_registrations_list_get_register_unregister(xclient, http):
    assert {"model_name": "InternVL2.5", "is_builtin": True} in xclient.list_model_registrations("LLM")
    [detailed] = [r for r in xclient.list_model_registrations("LLM", detailed=True) if r["model_name"] == "InternVL2.5"]
    assert len(detailed["model_specs"]) == 12 and detailed["is_builtin"] is True
    builtin = xclient.get_model_registration("LLM", "InternVL2.5")
    assert builtin["context_length"] == 16384
    custom = {k: v for k, v in builtin.items() if k != "is_builtin"} | {"model_name": "my-internvl"}
    assert xclient.register_model("LLM", json.dumps(custom), persist=True) is None
    assert xclient.get_model_registration("LLM", "my-internvl")["is_builtin"] is False
    assert xclient.query_engine_by_model_name("my-internvl")["Transformers"][0]["model_name"] == "my-internvl"
    again = http.post("/v1/model_registrations/LLM", json={"model": json.dumps(custom), "persist": True})
    assert "already registered" in assert_openai_error(again, 400)["message"]
    builtin_again = http.post("/v1/model_registrations/LLM", json={"model": json.dumps({**custom, "model_name": "InternVL2.5"})})
    assert "built-in" in assert_openai_error(builtin_again, 400)["message"]
    invalid = http.post("/v1/model_registrations/LLM", json={"model": json.dumps({**custom, "surprise": 1})})
    assert "surprise" in assert_openai_error(invalid, 400)["message"]
    xclient.unregister_model("LLM", "my-internvl")
    assert_openai_error(http.get("/v1/model_registrations/LLM/my-internvl"), 404, "not_found_error")
    assert_openai_error(http.get("/v1/model_registrations/image"), 400)


def test_engines_by_model_name(xclient, http):
    engines = xclient.query_engine_by_model_name("InternVL2.5")
    assert engines == http.get("/v1/engines/InternVL2.5").json()
    transformers = engines["Transformers"]
    assert len(transformers) == 12
    assert transformers[0] == {"model_name": "InternVL2.5", "model_format": "pytorch", "model_size_in_billions": 1,
                               "quantizations": ["4-bit", "8-bit", "none"]}
    assert_openai_error(http.get("/v1/engines/NoSuchModel"), 404)


def test_cache_list_and_remove(xclient, http, vlserve_home):
    assert xclient.list_cached_models() == []
    folder = vlserve_home / "cache" / "huggingface" / "OpenGVLab--InternVL2_5-1B"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    [row] = xclient.list_cached_models()
    assert row["model_id"] == "OpenGVLab/InternVL2_5-1B" and row["hub"] == "huggingface"
    assert row["model_name"] == "InternVL2.5" and row["size_bytes"] == 2 and row["complete"] is False
    assert xclient.list_cached_models(model_name="other") == []
    assert xclient.confirm_and_remove_model("InternVL2.5--1B--pytorch--none") is True
    assert not folder.exists() and xclient.list_cached_models() == []
    missing = http.delete("/v1/cache/models", params={"model_id": "OpenGVLab/InternVL2_5-1B"})
    assert "not in the cache" in assert_openai_error(missing, 404)["message"]


def test_cluster_auth_progress_instances_and_unknown_uids(http, model_uid):
    assert http.get("/v1/cluster/auth").json() == {"auth": False}
    assert http.get(f"/v1/models/{model_uid}/progress").json()["progress"] == 1.0
    [instance] = http.get("/v1/models/instances", params={"model_uid": model_uid}).json()
    assert instance["model_uid"] == model_uid and instance["status"] == "READY"
    assert http.get("/v1/models/instances", params={"model_name": "other"}).json() == []
    listing = http.get("/v1/models").json()
    assert listing["object"] == "list" and listing["data"][0]["id"] == model_uid
    assert listing["data"][0]["object"] == "model"
    for method, path in [("GET", "/v1/models/nope"), ("DELETE", "/v1/models/nope"), ("GET", "/v1/models/nope/progress")]:
        assert_openai_error(http.request(method, path), 404, "not_found_error")
    cancel_ready = http.post(f"/v1/models/{model_uid}/cancel")
    assert "finished launching" in assert_openai_error(cancel_ready, 400)["message"]


def test_abort_request_stops_a_streaming_answer(xclient, http, model_uid):
    """xinference-client's abort_request, with the id every chunk of the answer carries."""
    body = {"model": model_uid, "messages": [{"role": "user", "content": "Talk."}], "max_tokens": 400,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        assert xclient.abort_request(model_uid, first["id"]) == {}
        rest = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert rest[-1]["usage"]["completion_tokens"] < 400  # cut short, not finished
    assert xclient.abort_request(model_uid, first["id"]) == {}  # finished: a no-op, as in Xinference
    with pytest.raises(RuntimeError, match="not running"):
        xclient.abort_request("no-such-model", "x")


def test_supervisor_vllm_supported_and_deletable_files(xclient, http):
    assert "supervisor_ip" in xclient.get_supervisor_info()
    supported = xclient.vllm_models()  # a fixed path, registered before /v1/models/{uid}
    assert set(supported) == {"chat", "generate"} and "InternVL2.5" in supported["chat"]
    files = xclient.list_deletable_models("InternVL2.5--1B--pytorch--none")
    assert files == {"model_version": "InternVL2.5--1B--pytorch--none", "worker_ip": None, "paths": []}
    assert_openai_error(http.get("/v1/cache/models/files"), 400)


def test_other_model_types_calls_say_the_model_is_an_llm(live, model_uid):
    """Each handle method of another model type, pointed at the chat model: a 400 naming what it asked for."""
    png = png_data_uri().encode()
    embedding, rerank = (cls(model_uid, live.url, {}) for cls in (handles.RESTfulEmbeddingModelHandle,
                                                                   handles.RESTfulRerankModelHandle))
    image, video, audio = (cls(model_uid, live.url, {}) for cls in (
        handles.RESTfulImageModelHandle, handles.RESTfulVideoModelHandle, handles.RESTfulAudioModelHandle))
    world, flexible = (cls(model_uid, live.url, {}) for cls in (handles.RESTfulWorldModelHandle,
                                                                handles.RESTfulFlexibleModelHandle))
    calls = [
        (lambda: embedding.create_embedding("hi"), "not embeddings"),
        (lambda: embedding.convert_ids_to_tokens([1, 2]), "not token-id conversion"),
        (lambda: rerank.rerank(["a", "b"], "q"), "not reranking"),
        (lambda: image.text_to_image("a cat"), "not image generation"),
        (lambda: image.image_to_image(png, "a cat"), "not image variations"),
        (lambda: image.image_edit(png, "a cat"), "not image edits"),
        (lambda: image.inpainting(png, png, "a cat"), "not inpainting"),
        (lambda: image.ocr(png), "POST /v1/chat/completions"),
        (lambda: video.text_to_video("a cat"), "not video generation"),
        (lambda: video.image_to_video(png, "a cat"), "not video generation"),
        (lambda: video.flf_to_video(png, png, "a cat"), "not video generation"),
        (lambda: world.generate("a cat"), "not world generation"),
        (lambda: audio.create_embedding(b"RIFF"), "not audio embeddings"),
        (lambda: audio.transcriptions(b"RIFF"), "not transcription"),
        (lambda: audio.translations(b"RIFF"), "not audio translation"),
        (lambda: audio.speech("hello"), "not speech"),
        (lambda: audio.speech("hello", prompt_speech=b"RIFF"), "not speech"),  # a form, not JSON
        (lambda: flexible.infer(x=1), "not flexible-model inference"),
    ]
    for call, reason in calls:
        with pytest.raises(RuntimeError, match=f"model '{model_uid}' is an LLM; it serves chat and completions") as e:
            call()
        assert reason in str(e.value)


def test_other_model_types_calls_answer_openai_errors(http, model_uid):
    error = assert_openai_error(http.post("/v1/embeddings", json={"model": model_uid, "input": "hi"}), 400)
    assert error["param"] == "model" and "not embeddings" in error["message"]
    files = {"model": (None, "no-such-model"), "image": ("image", b"x")}
    assert_openai_error(http.post("/v1/images/ocr", files=files), 404, "not_found_error")
    assert "model" in assert_openai_error(http.post("/v1/rerank", json={"query": "q"}), 400)["param"]
    assert_openai_error(http.post("/v1/embeddings", content=b"{"), 400)


def test_xinference_only_management_says_why_it_is_not_served(xclient, http, model_uid):
    calls = [
        (xclient.get_autostart_config, "no autostart"),
        (xclient.get_autostart_model_summary, "no autostart"),
        (lambda: xclient.upsert_autostart_model({"model_uid": model_uid}), "no autostart"),
        (lambda: xclient.remove_autostart_model(model_uid), "no autostart"),
        (lambda: xclient.reload_model(model_uid, {"max_tokens": 5}), "terminate it"),
        (lambda: xclient.get_model_reload_status(model_uid), "cannot be changed in place"),
        (lambda: xclient.get_model_reload_config(model_uid), "cannot be changed in place"),
        (lambda: xclient.add_model_replica(model_uid), "replica count is fixed at launch"),
        (lambda: xclient.terminate_model_replica(model_uid, 0), "replica count is fixed at launch"),
        (lambda: xclient.get_progress("some-id"), "stream it"),
        (xclient.abort_cluster, "SIGTERM"),
        (xclient.relaunch_api, "restart `vlserve serve`"),
        (lambda: xclient.get_api_relaunch("op"), "no separate API"),
        (xclient.list_api_relaunches, "no separate API"),
        (xclient.relaunch_supervisor, "no separate API"),
        (lambda: xclient.get_supervisor_relaunch("op"), "no separate API"),
        (xclient.list_supervisor_relaunches, "no separate API"),
        (lambda: xclient.relaunch_worker("127.0.0.1:30001/x"), "no separate API"),  # quoted: a slash in the path
        (lambda: xclient.get_worker_relaunch("op"), "no separate API"),
        (xclient.list_worker_relaunches, "no separate API"),
    ]
    for call, reason in calls:
        with pytest.raises(RuntimeError, match="is not served: ") as e:
            call()
        assert reason in str(e.value)
    login = assert_openai_error(http.post("/token", json={"username": "u", "password": "p"}), 400)
    assert "api_key=<key>" in login["message"]  # (the client calls login only when the server has keys)
    assert "GET /v1/supervisor" in assert_openai_error(http.get("/v1/address"), 400)["message"]  # (its message is lost)
    assert set(xclient.list_models()) == {model_uid}  # none of these touched the model


def test_fixed_model_paths_come_before_the_uid_routes(live):
    """No fixed /v1/models/... path can be taken for a model uid: each is registered before the {model_uid} route
    of its method."""
    routes = [(r.path, m) for r in live.app.routes for m in getattr(r, "methods", ())]
    uid_route = {m: i for i, (p, m) in enumerate(routes) if p == "/v1/models/{model_uid}"}
    fixed = [(i, p, m) for i, (p, m) in enumerate(routes) if p.startswith("/v1/models/") and "{" not in p]
    assert len(fixed) >= 2  # instances, vllm-supported
    for index, path, method in fixed:
        assert index < uid_route.get(method, len(routes)), (path, method)
