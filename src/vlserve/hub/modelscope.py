"""ModelScope through the `modelscope` client: list a revision's files, then its `snapshot_download` into the
cache folder.

The endpoint is resolved once per download and passed to both calls, so the listing and the files come from the
same site: MODELSCOPE_ENDPOINT (or the deprecated MODELSCOPE_DOMAIN) read at call time (the client reads it once per
process), else the client's own choice between modelscope.cn and modelscope.ai. `modelscope` is imported inside the
functions: it takes a second to import.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vlserve.hub.remote import RemoteSnapshot, download_error

DEFAULT_REVISION = "master"


def _configured_endpoint() -> str | None:
    site = (os.environ.get("MODELSCOPE_ENDPOINT") or os.environ.get("MODELSCOPE_DOMAIN") or "").strip()
    if not site:
        return None
    return (site if site.startswith(("http://", "https://")) else f"https://{site}").rstrip("/")


@contextmanager
def _translated(repo_id: str, endpoint: str) -> Iterator[None]:
    """Turn every failure the client reports (API, transport, integrity, disk) into a DownloadError."""
    import requests
    from modelscope.hub.errors import HubError, NotExistError

    try:
        yield
    except (HubError, requests.RequestException, OSError) as exc:
        reason = "repository not found (HTTP 404; check the repo id)" if isinstance(exc, NotExistError) else None
        raise download_error("modelscope", repo_id, endpoint, exc, reason) from exc


def _endpoint_for(repo_id: str) -> str:
    configured = _configured_endpoint()
    if configured is not None:
        return configured
    from modelscope.hub.api import HubApi

    with _translated(repo_id, "modelscope.cn / modelscope.ai"):
        return HubApi().resolve_endpoint_for_read(repo_id, repo_type="model").rstrip("/")


def list_files(repo_id: str, revision: str | None) -> RemoteSnapshot:
    """The files of `revision` (the default branch, master, when None) with their sizes."""
    from modelscope.hub.api import HubApi

    endpoint = _endpoint_for(repo_id)
    revision = revision or DEFAULT_REVISION
    with _translated(repo_id, endpoint):
        entries = HubApi(endpoint=endpoint).list_repo_files(repo_id, "model", revision=revision)
    files = {e.path: e.size or None for e in entries if e.type != "tree"}  # the listing says 0 when it does not know
    return RemoteSnapshot(revision=revision, files=files, endpoint=endpoint)


def download(repo_id: str, snapshot: RemoteSnapshot, target: Path) -> None:
    """Fetch the listed revision into `target`; a partial file from an earlier attempt is resumed with a Range."""
    from modelscope.hub.snapshot_download import snapshot_download

    with _translated(repo_id, snapshot.endpoint):
        snapshot_download(repo_id, revision=snapshot.revision, local_dir=str(target), endpoint=snapshot.endpoint)
