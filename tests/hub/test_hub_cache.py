"""The cache on disk: listing, removal, pinned revisions, folder names, and what counts as complete."""

from __future__ import annotations

import pytest
from hub_standin import HF_SHA, read_tree

from vlserve import hub, settings
from vlserve.errors import Conflict, DownloadError, InvalidRequest, NotFound
from vlserve.hub.cache import MARKER, is_complete, locked, model_dir

HF_REPO, MS_REPO = "test-org/Fake-VL-1B", "test-org-ms/Fake-VL-1B"


def test_empty_cache_lists_nothing():
    assert hub.list_cached() == []


def test_lists_models_of_both_hubs_with_size_and_completeness(standin, repo_files):
    hf_path = hub.fetch("huggingface", HF_REPO)
    ms_path = hub.fetch("modelscope", MS_REPO)

    listed = {(m.hub, m.repo_id): m for m in hub.list_cached()}

    assert set(listed) == {("huggingface", HF_REPO), ("modelscope", MS_REPO)}
    assert listed["huggingface", HF_REPO].path == hf_path and listed["modelscope", MS_REPO].path == ms_path
    for entry in listed.values():
        assert entry.complete and entry.revision is None
        assert entry.size_bytes >= sum(len(data) for data in repo_files.values())


def test_folder_without_a_valid_marker_is_not_complete(standin):
    path = hub.fetch("huggingface", HF_REPO)

    (path / MARKER).write_text("{not json")
    assert not is_complete(path)
    assert [m.complete for m in hub.list_cached()] == [False]

    (path / MARKER).unlink()
    assert not is_complete(path)  # every file is there, but nothing vouches that the download finished


def test_remove_deletes_the_folder_and_a_second_remove_is_not_found(standin):
    path = hub.fetch("huggingface", HF_REPO)

    assert hub.remove_cached(HF_REPO) == [path]
    assert not path.exists() and hub.list_cached() == []
    with pytest.raises(NotFound, match="not in the cache"):
        hub.remove_cached(HF_REPO)


def test_remove_on_one_hub_keeps_the_other(standin):
    hub.fetch("huggingface", HF_REPO)
    ms_path = hub.fetch("modelscope", MS_REPO)

    with pytest.raises(NotFound, match=f"{HF_REPO} on modelscope is not in the cache") as caught:
        hub.remove_cached(HF_REPO, hub="modelscope")
    assert f"{HF_REPO} (huggingface)" in str(caught.value)  # the message lists what is cached
    assert hub.remove_cached(MS_REPO, hub="modelscope") == [ms_path]
    assert [(m.hub, m.repo_id) for m in hub.list_cached()] == [("huggingface", HF_REPO)]


def test_remove_of_an_unknown_hub_is_invalid():
    with pytest.raises(InvalidRequest, match="huggingface, modelscope"):
        hub.remove_cached(HF_REPO, hub="github")


def test_remove_while_a_download_holds_the_folder_is_a_conflict(standin):
    path = hub.fetch("huggingface", HF_REPO)

    with locked(path), pytest.raises(Conflict, match="being downloaded"):
        hub.remove_cached(HF_REPO)
    assert is_complete(path)


def test_pinned_revision_gets_its_own_folder(standin, repo_files):
    pinned = hub.fetch("huggingface", HF_REPO, revision=HF_SHA)
    default = hub.fetch("huggingface", HF_REPO)

    assert pinned.name == f"test-org--Fake-VL-1B@{HF_SHA}" and default.name == "test-org--Fake-VL-1B"
    assert read_tree(pinned) == repo_files
    assert sorted((m.revision or "") for m in hub.list_cached()) == ["", HF_SHA]
    assert len(hub.remove_cached(HF_REPO)) == 2


def test_unknown_revision_is_a_download_error(standin):
    with pytest.raises(DownloadError, match="revision not found"):
        hub.fetch("huggingface", HF_REPO, revision="no-such-branch")


def test_revision_with_a_slash_is_kept_in_one_folder_name():
    assert model_dir("huggingface", HF_REPO, "refs/pr/1").parent == settings.cache_dir() / "huggingface"


@pytest.mark.parametrize("repo_id", ["../etc", "org/../x", "noslash", "a/b/c", "a--b/c", "org/na me", "/abs"])
def test_repo_ids_that_are_not_safe_folder_names_are_refused(repo_id):
    with pytest.raises(InvalidRequest, match="org/name"):
        model_dir("huggingface", repo_id)
