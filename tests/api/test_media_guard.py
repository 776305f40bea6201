"""Media URLs cannot be used to reach this machine or its network (SSRF), end to end against loopback stand-ins
only: a real image served on 127.0.0.1 and [::1], a name resolving to loopback, and redirects to loopback are
refused by default and fetched when the operator allows private addresses. Private, link-local and metadata
ranges are checked at the address level with a stubbed resolver: no test opens a connection to them, and no test
traffic leaves loopback."""

from __future__ import annotations

import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from api_helpers import assert_openai_error, start_server
from PIL import Image

from vlserve.api.app import create_app
from vlserve.config import ServerConfig
from vlserve.errors import InvalidRequest
from vlserve.serving import media_fetch
from vlserve.serving.media_fetch import MediaFetcher, MediaPolicy, address_problem

PNG = io.BytesIO()
Image.new("RGB", (40, 30), (10, 200, 10)).save(PNG, format="PNG")
PNG_BYTES = PNG.getvalue()


class _Web(BaseHTTPRequestHandler):
    """/img.png: the image (and the Host header it was asked with); /to?url=U: a 302 to U."""

    hosts: list[str] = []

    def do_GET(self):  # noqa: N802
        type(self).hosts.append(self.headers.get("Host", ""))
        if self.path.startswith("/to?url="):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/to?url="))
            self.end_headers()
            return
        self.send_response(200 if self.path == "/img.png" else 404)
        self.send_header("Content-Length", str(len(PNG_BYTES)))
        self.end_headers()
        self.wfile.write(PNG_BYTES)

    def log_message(self, *args):
        pass


class _Web6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _serve(server: ThreadingHTTPServer):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def web4():
    server = _serve(ThreadingHTTPServer(("127.0.0.1", 0), _Web))
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def web6():
    server = _serve(_Web6(("::1", 0), _Web))
    yield server.server_address[1]
    server.shutdown()


def stub_resolver(table: dict[str, list[str]]):
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return table[host]

    resolve.calls = calls
    return resolve


ALLOWED = MediaPolicy(timeout_s=5, allow_private=True)


# -- the address rule -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "0.0.0.0", "::", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254",
    "192.168.1.1", "169.254.169.254", "169.254.0.1", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1",
    "224.0.0.1", "239.255.255.250", "ff02::1", "100.64.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "2002:7f00:1::", "64:ff9b::a9fe:a9fe",
    "2001:db8::1",
])  # fmt: skip
def test_non_public_addresses_are_refused(address):
    assert address_problem(address) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "172.32.0.1", "192.169.0.1"])
def test_public_addresses_pass(address):
    assert address_problem(address) is None


@pytest.mark.parametrize("resolved", [["10.1.2.3"], ["172.20.0.5"], ["192.168.0.10"], ["169.254.169.254"],
                                      ["fd00::5"], ["93.184.216.34", "10.0.0.1"]])
async def test_names_resolving_to_private_ranges_are_refused_before_any_connection(resolved, monkeypatch):
    def no_connection(*args, **kwargs):
        raise AssertionError("a refused URL must not be connected to")

    monkeypatch.setattr(httpx.AsyncClient, "send", no_connection)
    resolve = stub_resolver({"media.example": resolved})
    with pytest.raises(InvalidRequest, match="refused: .* address"):
        await MediaFetcher(MediaPolicy(), resolve)("https://media.example/cat.png")
    assert resolve.calls == ["media.example"]


async def test_metadata_ip_literals_are_refused_without_resolving(monkeypatch):
    monkeypatch.setattr(httpx.AsyncClient, "send", lambda *a, **k: pytest.fail("connected"))
    resolve = stub_resolver({})
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://[::ffff:a9fe:a9fe]/",
                "http://10.0.0.1:8080/x.png", "http://0.0.0.0:80/"):
        with pytest.raises(InvalidRequest, match="refused"):
            await MediaFetcher(MediaPolicy(), resolve)(url)
    assert resolve.calls == []


async def test_domain_allow_list(monkeypatch):
    monkeypatch.setattr(httpx.AsyncClient, "send", lambda *a, **k: pytest.fail("connected"))
    fetcher = MediaFetcher(MediaPolicy(allow_domains=("images.example",)), stub_resolver({}))
    for url in ("https://evil.example/a.png", "https://images.example.evil.test/a.png", "http://93.184.216.34/a"):
        with pytest.raises(InvalidRequest, match="only from images.example"):
            await fetcher(url)
    assert media_fetch.domain_allowed("CDN.Images.Example.", ("images.example",))


# -- end to end on loopback -------------------------------------------------------------------------------------

async def test_loopback_v4_v6_and_localhost_are_refused_by_default(web4, web6):
    fetcher = MediaFetcher(MediaPolicy(timeout_s=5))
    for url in (f"http://127.0.0.1:{web4}/img.png", f"http://[::1]:{web6}/img.png", f"http://localhost:{web4}/img.png"):
        with pytest.raises(InvalidRequest, match="loopback address"):
            await fetcher(url)


async def test_loopback_is_fetched_when_private_media_is_allowed(web4, web6):
    fetcher = MediaFetcher(ALLOWED)
    for url in (f"http://127.0.0.1:{web4}/img.png", f"http://[::1]:{web6}/img.png", f"http://localhost:{web4}/img.png"):
        assert await fetcher(url) == PNG_BYTES


async def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(web4):
    """Resolved once, connected to that address: a second DNS answer (rebinding) is never asked for."""
    resolve = stub_resolver({"images.test": ["127.0.0.1"]})
    _Web.hosts.clear()
    assert await MediaFetcher(ALLOWED, resolve)(f"http://images.test:{web4}/img.png") == PNG_BYTES
    assert resolve.calls == ["images.test"] and _Web.hosts == [f"images.test:{web4}"]


async def test_redirects_are_checked_hop_by_hop(web4, web6, monkeypatch):
    """The redirecting server on 127.0.0.1 stands in for a public one; where it points to is checked again."""
    real = media_fetch.address_problem
    monkeypatch.setattr(media_fetch, "address_problem", lambda a: None if a == "127.0.0.1" else real(a))
    fetcher = MediaFetcher(MediaPolicy(timeout_s=5), stub_resolver({"localhost": ["::1"]}))
    first = f"http://127.0.0.1:{web4}/to?url="
    assert await fetcher(first + f"http://127.0.0.1:{web4}/img.png") == PNG_BYTES  # the stand-in itself passes
    for target in (f"http://[::1]:{web6}/img.png", f"http://localhost:{web6}/img.png",
                   "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x.png"):
        with pytest.raises(InvalidRequest, match="refused"):
            await fetcher(first + target)
    with pytest.raises(InvalidRequest, match="must be http"):
        await fetcher(first + "file:///etc/passwd")
    allowed = MediaFetcher(ALLOWED)
    assert await allowed(first + f"http://[::1]:{web6}/img.png") == PNG_BYTES
    loop = f"http://127.0.0.1:{web4}/to?url=http://127.0.0.1:{web4}/to?url=http://127.0.0.1:{web4}/to?url="
    with pytest.raises(InvalidRequest, match="more than 3 redirects"):
        await allowed(loop + f"http://127.0.0.1:{web4}/to?url=http://127.0.0.1:{web4}/img.png")


async def test_fetches_stop_at_the_byte_limit_and_the_deadline(web4):
    with pytest.raises(InvalidRequest, match="media limit of 100 bytes"):
        await MediaFetcher(MediaPolicy(timeout_s=5, max_bytes=100, allow_private=True))(f"http://127.0.0.1:{web4}/img.png")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts, never answers
    try:
        with pytest.raises(InvalidRequest, match="timed out after 0.3s"):
            await MediaFetcher(MediaPolicy(timeout_s=0.3, allow_private=True))(f"http://127.0.0.1:{silent.getsockname()[1]}/")
    finally:
        silent.close()


async def test_file_urls_only_under_allowed_folders(tmp_path):
    allowed, other = tmp_path / "media", tmp_path / "secret"
    allowed.mkdir(), other.mkdir()
    (allowed / "a.png").write_bytes(PNG_BYTES)
    (other / "key.png").write_bytes(b"secret")
    (allowed / "link.png").symlink_to(other / "key.png")
    with pytest.raises(InvalidRequest, match="file:// media is off"):
        await MediaFetcher()(f"file://{allowed}/a.png")
    fetcher = MediaFetcher(MediaPolicy(allow_dirs=(allowed,), max_bytes=len(PNG_BYTES)))
    assert await fetcher(f"file://{allowed}/a.png") == PNG_BYTES
    for url in (f"file://{other}/key.png", f"file://{allowed}/../secret/key.png", f"file://{allowed}/link.png",
                f"file://{allowed}", "file:///etc/passwd"):
        with pytest.raises(InvalidRequest, match="not in a folder"):
            await fetcher(url)
    with pytest.raises(InvalidRequest, match="does not exist"):
        await fetcher(f"file://{allowed}/missing.png")
    with pytest.raises(InvalidRequest, match="local path"):
        await fetcher(f"file://remote-host{allowed}/a.png")
    with pytest.raises(InvalidRequest, match="media limit"):
        await MediaFetcher(MediaPolicy(allow_dirs=(allowed,), max_bytes=10))(f"file://{allowed}/a.png")


def test_a_default_server_refuses_loopback_media_and_an_allowing_one_fetches_it(live, model_uid, web4, web6):
    """Through HTTP: the session server allows private media (its tests use loopback stand-ins); a server with the
    default settings, sharing the same loaded model, refuses the same URLs."""
    default = start_server(create_app(ServerConfig(), host=live.services.host), lifespan=False)
    try:
        for url in (f"http://127.0.0.1:{web4}/img.png", f"http://[::1]:{web6}/img.png", f"http://localhost:{web4}/img.png",
                    f"http://127.0.0.1:{web4}/to?url=http://[::1]:{web6}/img.png"):
            body = {"model": model_uid, "max_tokens": 1, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]}]}
            error = assert_openai_error(httpx.post(f"{default.url}/v1/chat/completions", json=body, timeout=60), 400)
            assert "loopback address" in error["message"] and error["param"] == "messages.0.content.0.image_url"
            assert httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=60).status_code == 200
    finally:
        default.stop()
