"""Turn a resolved spec into a local model folder: the user's --model-path as it is, or a verified copy in the cache,
downloaded from the chosen hub when it is not there yet."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from vlserve import settings
from vlserve.errors import DownloadError, InvalidRequest
from vlserve.hub.cache import check_hub, clear_marker, is_complete, locked, missing_files, model_dir, write_marker
from vlserve.hub.progress import DiskProgress, ProgressCallback
from vlserve.hub.remote import HUB_LABELS

if TYPE_CHECKING:
    from vlserve.registry import ResolvedSpec

logger = logging.getLogger(__name__)

# Each client module offers list_files(repo_id, revision) -> RemoteSnapshot and download(repo_id, snapshot, target).
_CLIENTS = {"huggingface": "vlserve.hub.huggingface", "modelscope": "vlserve.hub.modelscope"}


def choose_hub(download_hub: str | None = None) -> str:
    """The launch's download_hub, else VLSERVE_MODEL_SRC, else huggingface."""
    if download_hub:
        return check_hub(download_hub)
    return check_hub(settings.default_hub(), source="VLSERVE_MODEL_SRC")


def local_model_path(model_path: str | Path) -> Path:
    """A user-given model folder, checked: it must exist and hold the model's config.json."""
    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise InvalidRequest(f"--model-path {path} is not a directory; give the folder that holds the model's "
                             "config.json and weights", param="model_path")
    if not (path / "config.json").is_file():
        raise InvalidRequest(f"--model-path {path} has no config.json; give the folder that holds the model's "
                             "config.json and weights (not a parent folder or a single file)", param="model_path")
    return path.resolve()


def repo_id_for(resolved: ResolvedSpec, hub: str) -> str:
    repo_id = resolved.spec.model_hub_ids.get(hub)
    if repo_id is None:
        published = ", ".join(sorted(resolved.spec.model_hub_ids))
        raise InvalidRequest(f"{resolved.describe()} is not published on {hub}; use --download-hub with one of "
                             f"{published}, or --model-path", param="download_hub")
    return repo_id


def _drop_damaged(target: Path, files: dict[str, int | None]) -> None:
    """Delete listed files whose size is wrong: a client may trust a file it wrote earlier (Hugging Face does, by
    commit), so a truncated or replaced one would otherwise survive the re-download."""
    for name in missing_files(target, files):
        (target / name).unlink(missing_ok=True)


def _download(hub: str, repo_id: str, revision: str | None, target: Path, on_progress: ProgressCallback | None) -> None:
    client = importlib.import_module(_CLIENTS[hub])
    clear_marker(target)
    snapshot = client.list_files(repo_id, revision)
    target.mkdir(parents=True, exist_ok=True)
    _drop_damaged(target, snapshot.files)
    logger.info("downloading %s (%d files, %d bytes) from %s into %s",
                repo_id, len(snapshot.files), snapshot.total_bytes, snapshot.endpoint, target)
    with DiskProgress(target, snapshot.total_bytes, on_progress):
        client.download(repo_id, snapshot, target)
    missing = missing_files(target, snapshot.files)
    if missing:
        raise DownloadError(f"the download of {repo_id} from {HUB_LABELS[hub]} ended with {len(missing)} file(s) "
                            f"missing or of the wrong size ({', '.join(missing[:5])}); launch again to resume it, "
                            "or pass --model-path with a local copy", param="download_hub")
    write_marker(target, hub=hub, repo_id=repo_id, snapshot=snapshot)


def fetch(hub: str, repo_id: str, *, revision: str | None = None,
          on_progress: ProgressCallback | None = None) -> Path:
    """A verified copy of `repo_id` from `hub` in the cache: already there, or downloaded now (resuming what an
    interrupted attempt left). Concurrent calls for the same folder wait for each other instead of both writing."""
    hub = check_hub(hub)
    target = model_dir(hub, repo_id, revision)
    with locked(target):
        if not is_complete(target):
            _download(hub, repo_id, revision, target, on_progress)
    if on_progress is not None:
        on_progress(1.0)
    return target


def ensure_local(resolved: ResolvedSpec, *, download_hub: str | None = None, model_path: str | Path | None = None,
                 revision: str | None = None, on_progress: ProgressCallback | None = None) -> Path:
    """The folder to load `resolved` from. `model_path` skips the hubs entirely; otherwise the hub is
    `download_hub`, else VLSERVE_MODEL_SRC, else Hugging Face, and `on_progress(fraction)` follows the download."""
    if model_path is not None:
        path = local_model_path(model_path)
        if on_progress is not None:
            on_progress(1.0)
        return path
    hub = choose_hub(download_hub)
    return fetch(hub, repo_id_for(resolved, hub), revision=revision, on_progress=on_progress)
