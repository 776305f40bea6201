"""API keys and CORS. Every route the app has (enumerated from the app itself, so a new route cannot be forgotten)
needs `Authorization: Bearer <key>` when the server has keys, except liveness, xinference-client's auth probe and
the web UI's shipped files and Xinference's login (which says to use a key); without keys nothing asks for one."""

from __future__ import annotations

import re

import httpx
import openai
import pytest
from api_helpers import assert_openai_error, start_server
from fastapi.routing import APIRoute
from starlette.routing import Route
from xinference_client import RESTfulClient

from vlserve.api.app import create_app
from vlserve.api.auth import OPEN_PATHS, is_open, key_matches
from vlserve.config import ServerConfig
from vlserve.serving.embedded import EmbeddedHost

KEYS = ("key-one", "second-key-with-another-length")
WRONG = ("Bearer nope", "Basic a2V5LW9uZQ==", "Bearer key-one2", "key-one", "Bearer", "bearer KEY-ONE")


def offline_fetch(*args, **kwargs):
    raise AssertionError("no download in the auth tests")


@pytest.fixture(scope="module")
def locked(vlserve_home):
    app = create_app(ServerConfig(api_keys=KEYS, cors_origins=("https://app.example",), max_request_bytes=1_000_000),
                     host=EmbeddedHost(fetch_model=offline_fetch))
    server = start_server(app)
    yield server
    server.stop()


def _routes(routes) -> list[Route]:
    found = []
    for route in routes:
        if isinstance(route, APIRoute | Route):
            found.append(route)
        elif hasattr(route, "original_router"):  # FastAPI wraps an included router (no prefixes in this app)
            found += _routes(route.original_router.routes)
    return found


def every_route(app) -> list[tuple[str, str]]:
    """(method, concrete path) for every route and method of the app, path parameters filled in."""
    return [(method, re.sub(r"\{[^}]+\}", "x", route.path))
            for route in _routes(app.routes) for method in sorted(route.methods or ())]


def test_the_route_list_covers_the_whole_api(locked):
    paths = {p for _, p in every_route(locked.app)}
    schema = {re.sub(r"\{[^}]+\}", "x", p) for p in locked.app.openapi()["paths"]}
    assert schema <= paths  # the enumeration misses nothing the API documents
    assert {"/v1/chat/completions", "/v1/models/x", "/metrics", "/health", "/ui/static/x", "/openapi.json"} <= paths


def test_every_route_but_the_open_ones_needs_a_key(locked):
    checked = 0
    with httpx.Client(base_url=locked.url, timeout=30) as http:
        for method, path in every_route(locked.app):
            anonymous = http.request(method, path)
            if is_open(path):
                assert anonymous.status_code != 401, (method, path)
                continue
            assert anonymous.status_code == 401, (method, path, anonymous.status_code)
            assert anonymous.headers["www-authenticate"] == "Bearer"
            if method != "HEAD":
                error = assert_openai_error(anonymous, 401, "authentication_error")
                assert "Authorization: Bearer" in error["message"]
            wrongs = WRONG if path == "/v1/models" else WRONG[:2]
            for wrong in wrongs:
                assert http.request(method, path, headers={"Authorization": wrong}).status_code == 401, (path, wrong)
            for key in KEYS:
                authed = http.request(method, path, headers={"Authorization": f"Bearer {key}"})
                assert authed.status_code != 401, (method, path)
            checked += 1
    assert checked >= 20
    assert OPEN_PATHS == {"/health", "/v1/cluster/auth", "/", "/ui", "/token"}


def test_without_keys_no_route_asks_for_one(live):
    with httpx.Client(base_url=live.url, timeout=30) as http:
        for method, path in every_route(live.app):
            if (method, path) in (("DELETE", "/v1/models/x"), ("DELETE", "/v1/cache/models")):
                continue  # harmless here, but nothing to prove beyond the GETs and POSTs
            assert http.request(method, path).status_code != 401, (method, path)
        assert http.get("/v1/cluster/auth").json() == {"auth": False}


def test_the_sdks_send_their_key(locked):
    assert httpx.get(f"{locked.url}/v1/cluster/auth").json() == {"auth": True}
    client = RESTfulClient(locked.url, api_key=KEYS[0])
    assert client.list_models() == {}
    with pytest.raises(RuntimeError):
        RESTfulClient(locked.url).list_models()
    with pytest.raises(RuntimeError, match=r"API keys, not user accounts.*api_key=<key>"):
        RESTfulClient(locked.url).login("user", "password")  # asked without a key: the answer says to use one
    assert openai.OpenAI(base_url=f"{locked.url}/v1", api_key=KEYS[1]).models.list().data == []
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{locked.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_cors_allows_only_configured_origins(locked, live):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    ok = httpx.options(f"{locked.url}/v1/chat/completions", headers={"Origin": "https://app.example", **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.options(f"{locked.url}/v1/chat/completions", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    closed = httpx.get(f"{live.url}/health", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in closed.headers  # no origins configured: same-origin only


def test_keys_are_compared_whole():
    keys = tuple(k.encode() for k in KEYS)
    assert key_matches("key-one", keys) and key_matches(KEYS[1], keys)
    assert not any(key_matches(k, keys) for k in ("key-on", "key-one ", "KEY-ONE", "", "key-onekey-one"))


def test_oversized_bodies_are_refused_with_413(locked):
    body = b'{"model": "m", "messages": [' + b" " * 2_000_000 + b"]}"
    headers = {"Authorization": f"Bearer {KEYS[0]}", "Content-Type": "application/json"}
    declared = httpx.post(f"{locked.url}/v1/chat/completions", content=body, headers=headers, timeout=60)
    chunked = httpx.post(f"{locked.url}/v1/chat/completions", headers=headers, timeout=60,
                         content=(body[i:i + 65536] for i in range(0, len(body), 65536)))  # no Content-Length
    for response in (declared, chunked):
        error = assert_openai_error(response, 413)
        assert "larger than this server's limit of 1000000 bytes" in error["message"]
