"""Downloads through the real huggingface_hub and modelscope clients, against the loopback stand-in hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from hub_standin import HF_SHA, read_tree

from vlserve import hub, settings
from vlserve.errors import DownloadError
from vlserve.hub.cache import MARKER, is_complete

WEIGHTS = "model.safetensors"
# huggingface_hub 2.x deletes a partial file when its download fails (the next attempt starts that file over);
# modelscope keeps `<file>.incomplete` and asks for the rest with a Range request.
KEEPS_PARTIAL_FILE = {"huggingface": False, "modelscope": True}


def test_downloads_repo_into_cache_and_marks_it_complete(standin, hub_name, repo_id, repo_files):
    path = hub.fetch(hub_name, repo_id)

    assert path == settings.cache_dir() / hub_name / repo_id.replace("/", "--")
    assert read_tree(path) == repo_files
    marker = json.loads((path / MARKER).read_text())
    assert marker["files"] == {name: len(data) for name, data in repo_files.items()}
    assert marker["revision"] == {"huggingface": HF_SHA, "modelscope": "master"}[hub_name]
    assert marker["endpoint"] == standin.url
    assert len(standin.served(hub_name, WEIGHTS)) == 1


def test_ensure_local_downloads_from_the_chosen_hub(standin, resolved, hub_name, repo_files):
    path = hub.ensure_local(resolved, download_hub=hub_name)

    assert path.parent.name == hub_name
    assert read_tree(path) == repo_files
    assert {r.hub for r in standin.requests} == {hub_name}


def test_cached_model_is_returned_without_any_request(standin, hub_name, repo_id):
    first = hub.fetch(hub_name, repo_id)
    standin.requests.clear()
    reported = []

    assert hub.fetch(hub_name, repo_id, on_progress=reported.append) == first
    assert standin.requests == []
    assert reported == [1.0]


def test_progress_is_reported_while_the_weights_arrive(standin, hub_name, repo_id):
    standin.faults[(hub_name, WEIGHTS)] = ["slow"]  # half the weights, a pause, the rest
    reported = []

    hub.fetch(hub_name, repo_id, on_progress=reported.append)

    assert reported[-1] == 1.0
    assert any(0 < f < 1 for f in reported), reported
    assert reported == sorted(reported) and all(0 <= f <= 1 for f in reported)


def test_dropped_connection_is_resumed_with_a_range_request(standin, hub_name, repo_id, repo_files):
    standin.faults[(hub_name, WEIGHTS)] = ["drop"]  # headers and half the body, then the connection closes

    path = hub.fetch(hub_name, repo_id)

    first, resumed = standin.served(hub_name, WEIGHTS)
    assert (first.range, first.status) == (None, 200)
    assert resumed.status == 206 and resumed.range == f"bytes={len(repo_files[WEIGHTS]) // 2}-"
    assert read_tree(path) == repo_files and is_complete(path)


def test_interrupted_download_is_not_cached_and_the_next_launch_finishes_it(standin, hub_name, repo_id, repo_files):
    standin.faults[(hub_name, WEIGHTS)] = ["drop", "404"]  # the transfer breaks and the retry is refused

    with pytest.raises(DownloadError):
        hub.fetch(hub_name, repo_id)

    path = settings.cache_dir() / hub_name / repo_id.replace("/", "--")
    assert not (path / MARKER).exists() and not is_complete(path)
    assert [(m.repo_id, m.complete) for m in hub.list_cached()] == [(repo_id, False)]

    standin.requests.clear()
    assert hub.fetch(hub_name, repo_id) == path
    assert read_tree(path) == repo_files and is_complete(path)
    (again,) = [r for r in standin.requests if r.kind == "file" and r.method == "GET"]  # the others were kept
    assert again.file == WEIGHTS
    assert (again.range is not None) == KEEPS_PARTIAL_FILE[hub_name]


def test_damaged_cached_file_is_downloaded_again(standin, hub_name, repo_id, repo_files):
    path = hub.fetch(hub_name, repo_id)
    (path / WEIGHTS).write_bytes(repo_files[WEIGHTS][:100])
    assert not is_complete(path)

    hub.fetch(hub_name, repo_id)

    assert read_tree(path) == repo_files and is_complete(path)
    assert len(standin.served(hub_name, WEIGHTS)) == 2


def test_concurrent_launches_of_one_model_download_it_once(standin, hub_name, repo_id, repo_files, caplog):
    standin.faults[(hub_name, WEIGHTS)] = ["slow"]  # keeps the first download busy while the second arrives
    caplog.set_level("INFO", logger="vlserve.hub.fetch")

    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: hub.fetch(hub_name, repo_id), range(2)))

    assert paths[0] == paths[1]
    assert read_tree(paths[0]) == repo_files and is_complete(paths[0])
    assert len(standin.served(hub_name, WEIGHTS)) == 1
    # the second launch waited for the first and found the model complete instead of starting its own download
    assert len([r for r in caplog.records if r.getMessage().startswith("downloading")]) == 1


def test_concurrent_launches_in_two_processes_download_once(standin, hub_name, repo_id, repo_files, tmp_path):
    standin.faults[(hub_name, WEIGHTS)] = ["slow"]
    code = f"from vlserve import hub; print(hub.fetch({hub_name!r}, {repo_id!r}))"
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp_path / "hf-home")}
    launches = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(2)]

    outputs = [launch.communicate(timeout=60)[0].strip().splitlines()[-1] for launch in launches]

    assert [launch.returncode for launch in launches] == [0, 0]
    assert outputs[0] == outputs[1] == str(settings.cache_dir() / hub_name / repo_id.replace("/", "--"))
    assert read_tree(outputs[0]) == repo_files
    assert len(standin.served(hub_name, WEIGHTS)) == 1


# -- failures name the hub and the repo and say what to do --------------------------------------------------------
def _assert_helpful(error: DownloadError, hub_label: str, repo_id: str) -> None:
    message = str(error)
    for part in (hub_label, repo_id, "--download-hub", "--model-path", "network"):
        assert part in message, message


HUB_LABEL = {"huggingface": "Hugging Face", "modelscope": "ModelScope"}


@pytest.fixture
def single_listing_attempt(monkeypatch):
    """modelscope retries a failed listing 4 times with 1-8 s pauses (MODELSCOPE_REPO_TREE_PAGE_MAX_ATTEMPTS, read
    at import); one attempt keeps the failure tests fast."""
    import modelscope_hub._legacy_api as legacy

    monkeypatch.setattr(legacy, "REPO_TREE_PAGE_MAX_ATTEMPTS", 1)


def test_missing_repo_is_a_download_error(standin, hub_name):
    with pytest.raises(DownloadError) as caught:
        hub.fetch(hub_name, "test-org/No-Such-Model")

    _assert_helpful(caught.value, HUB_LABEL[hub_name], "test-org/No-Such-Model")
    assert "404" in str(caught.value) or "not found" in str(caught.value).lower()
    assert hub.list_cached() == []


def test_hub_server_error_is_a_download_error(standin, hub_name, repo_id, single_listing_attempt):
    standin.api_status = 500

    with pytest.raises(DownloadError) as caught:
        hub.fetch(hub_name, repo_id)

    _assert_helpful(caught.value, HUB_LABEL[hub_name], repo_id)
    assert "500" in str(caught.value)
    assert not is_complete(settings.cache_dir() / hub_name / repo_id.replace("/", "--"))


def test_unreachable_hub_is_a_download_error(unreachable, hub_name, repo_id, single_listing_attempt):
    with pytest.raises(DownloadError) as caught:
        hub.fetch(hub_name, repo_id)

    _assert_helpful(caught.value, HUB_LABEL[hub_name], repo_id)
    assert unreachable in str(caught.value)
