"""Hugging Face through `huggingface_hub`: list a revision's files, then `snapshot_download` into the cache folder.

The endpoint is read at call time from HF_ENDPOINT (huggingface_hub itself reads it once, at import), so a mirror
set after start-up is honoured. `huggingface_hub` is imported inside the functions: `vlserve --help` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vlserve.hub.remote import RemoteSnapshot, download_error


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _transport_error() -> type[Exception]:
    try:
        import httpx2  # huggingface_hub >= 2

        return httpx2.HTTPError
    except ImportError:  # huggingface_hub 1.x speaks httpx; 0.x speaks requests, whose errors are OSErrors
        import httpx

        return httpx.HTTPError


def _reason(exc: BaseException) -> str | None:
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return "the repository is gated: accept its conditions on its hub page, then log in (hf auth login or HF_TOKEN)"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return "repository not found (HTTP 404; check the repo id, or log in if it is private)"
    if isinstance(exc, errors.RevisionNotFoundError):
        return "revision not found (HTTP 404)"
    return None


@contextmanager
def _translated(repo_id: str, site: str) -> Iterator[None]:
    """Turn every failure the client reports (HTTP, transport, disk, incomplete snapshot) into a DownloadError."""
    from huggingface_hub import errors

    xet_error = getattr(errors, "XetDownloadError", errors.EntryNotFoundError)  # the Xet transfer's own error
    try:
        yield
    except (OSError, errors.EntryNotFoundError, xet_error, _transport_error()) as exc:
        raise download_error("huggingface", repo_id, site, exc, _reason(exc)) from exc


def list_files(repo_id: str, revision: str | None) -> RemoteSnapshot:
    """The commit `revision` (default branch when None) points at, and its files with their sizes."""
    from huggingface_hub import HfApi

    site = endpoint()
    with _translated(repo_id, site):
        info = HfApi(endpoint=site).model_info(repo_id, revision=revision, files_metadata=True)
    files = {s.rfilename: (s.lfs.size if s.lfs is not None else s.size) for s in info.siblings or []}
    return RemoteSnapshot(revision=info.sha, files=files, endpoint=site)


def download(repo_id: str, snapshot: RemoteSnapshot, target: Path) -> None:
    """Fetch the listed commit into `target`; files already there from an earlier attempt are kept."""
    from huggingface_hub import snapshot_download

    with _translated(repo_id, snapshot.endpoint):
        snapshot_download(repo_id, revision=snapshot.revision, local_dir=target, endpoint=snapshot.endpoint)
