"""Every hub test runs against the loopback stand-in, with a fresh VLSERVE_HOME and the clients' own caches and
settings pointed into tmp_path, so nothing reaches the real hubs or the user's caches."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hub_standin import StandIn, fake_repo_files

from vlserve.registry import FamilySpec, ModelSpec, ResolvedSpec

HF_REPO = "test-org/Fake-VL-1B"
MS_REPO = "test-org-ms/Fake-VL-1B"


@pytest.fixture
def repo_files() -> dict[str, bytes]:
    return fake_repo_files()


@pytest.fixture
def resolved() -> ResolvedSpec:
    spec = ModelSpec(model_format="pytorch", model_size_in_billions=1, quantizations=["none"], model_id=HF_REPO,
                     model_hub_ids={"huggingface": HF_REPO, "modelscope": MS_REPO}, engines={"Transformers": ["none"]})
    family = FamilySpec(model_name="Fake-VL", model_family="internvl2_5", context_length=8192, model_lang=["en"],
                        model_ability=["chat", "vision"], model_specs=[spec])
    return ResolvedSpec(family, spec, "Transformers", "none")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any attempt to resolve or connect to something other than loopback fails the test: the stand-in is all
    these tests may talk to."""
    blocked = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not ipaddress.ip_address(address[0]).is_loopback:
            blocked.append(address)
            raise ConnectionRefusedError(f"test blocked a connection to {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1", None):
            blocked.append(host)
            raise socket.gaierror(f"test blocked a name lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    assert not blocked, f"tests reached beyond loopback: {blocked}"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh VLSERVE_HOME; the clients' caches, credentials and telemetry kept away from the user's."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("VLSERVE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VLSERVE_MODEL_SRC", raising=False)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN", "MODELSCOPE_DOMAIN"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub reads its settings once, at import: set the constants themselves. Telemetry off also stops
    # its once-a-day fetch of {ENDPOINT}/api/agent-harnesses, which ignores the endpoint passed to the calls.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    # huggingface_hub writes a download in 10 MB chunks and resumes from the last whole chunk: with 4 KB chunks a
    # transfer of the small fake weights that breaks halfway is resumed with a Range request, as a real one is.
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    monkeypatch.setattr("modelscope_hub.config._default_config", None)  # it keeps the env it first read
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.setenv("MODELSCOPE_DOWNLOAD_INTRA_CLOUD", "false")  # no Alibaba-cloud region probe
    monkeypatch.setattr("vlserve.hub.progress.POLL_INTERVAL_S", 0.02)


@pytest.fixture
def standin(monkeypatch, repo_files):
    """The stand-in hub holding the fake repo on both hubs; both clients pointed at it."""
    server = StandIn(repos={("huggingface", HF_REPO): repo_files, ("modelscope", MS_REPO): repo_files}).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
    yield server
    server.stop()
    assert all(r.hub is not None for r in server.requests), f"unexpected requests: {server.requests}"


REPO_ON = {"huggingface": HF_REPO, "modelscope": MS_REPO}


@pytest.fixture(params=["huggingface", "modelscope"])
def hub_name(request) -> str:
    return request.param


@pytest.fixture
def repo_id(hub_name) -> str:
    """The fake repo's id on the hub under test."""
    return REPO_ON[hub_name]


@pytest.fixture
def unreachable(monkeypatch):
    """Both endpoints pointed at a loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", url)
    return url
