"""Which hub a launch downloads from, the --model-path bypass, and a package import that stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hub_standin import read_tree

from vlserve import hub, settings
from vlserve.errors import InvalidRequest
from vlserve.registry import ResolvedSpec


def test_default_hub_is_hugging_face():
    assert hub.choose_hub() == "huggingface"


def test_env_names_the_hub_when_the_launch_does_not(monkeypatch):
    monkeypatch.setenv("VLSERVE_MODEL_SRC", "ModelScope")
    assert hub.choose_hub() == "modelscope"


def test_launch_parameter_beats_the_env(monkeypatch):
    monkeypatch.setenv("VLSERVE_MODEL_SRC", "modelscope")
    assert hub.choose_hub("huggingface") == "huggingface"


def test_unknown_hub_names_are_refused_with_the_known_ones(monkeypatch):
    with pytest.raises(InvalidRequest, match="download_hub 'github'.*huggingface, modelscope"):
        hub.choose_hub("github")
    monkeypatch.setenv("VLSERVE_MODEL_SRC", "gitee")
    with pytest.raises(InvalidRequest, match="VLSERVE_MODEL_SRC 'gitee'"):
        hub.choose_hub()


def test_env_choice_decides_where_ensure_local_downloads_from(standin, resolved, monkeypatch, repo_files):
    monkeypatch.setenv("VLSERVE_MODEL_SRC", "modelscope")

    path = hub.ensure_local(resolved)

    assert path == settings.cache_dir() / "modelscope" / "test-org-ms--Fake-VL-1B"
    assert read_tree(path) == repo_files
    assert {r.hub for r in standin.requests} == {"modelscope"}


def test_spec_not_published_on_the_chosen_hub_is_refused(resolved):
    spec = resolved.spec.model_copy(update={"model_hub_ids": {"huggingface": "test-org/Fake-VL-1B"}})
    hf_only = ResolvedSpec(resolved.family, spec, resolved.engine, resolved.quantization)

    with pytest.raises(InvalidRequest, match="not published on modelscope.*--download-hub"):
        hub.ensure_local(hf_only, download_hub="modelscope")


# -- --model-path ---------------------------------------------------------------------------------------------------
def test_model_path_skips_the_hubs_and_the_cache(standin, resolved, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    reported = []

    path = hub.ensure_local(resolved, model_path=str(tmp_path / "mine"), download_hub="modelscope",
                            on_progress=reported.append)

    assert path == (tmp_path / "mine").resolve()
    assert standin.requests == [] and not settings.cache_dir().exists()
    assert reported == [1.0]


def test_model_path_that_does_not_exist_is_refused(resolved, tmp_path):
    with pytest.raises(InvalidRequest, match="is not a directory") as caught:
        hub.ensure_local(resolved, model_path=tmp_path / "nowhere")
    assert caught.value.param == "model_path"


def test_model_path_without_config_json_is_refused(resolved, tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"\0")

    with pytest.raises(InvalidRequest, match="has no config.json"):
        hub.ensure_local(resolved, model_path=tmp_path)
    with pytest.raises(InvalidRequest, match="is not a directory"):
        hub.ensure_local(resolved, model_path=tmp_path / "weights.safetensors")


def test_importing_the_package_leaves_the_hub_clients_unloaded():
    code = "import sys, vlserve.hub; print(sorted({'huggingface_hub', 'modelscope', 'filelock'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
