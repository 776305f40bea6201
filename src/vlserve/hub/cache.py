"""The model cache on disk: one folder per (hub, repo id, revision) under VLSERVE_HOME/cache, a completion marker
written only after a verified download, a lock per folder, and listing / removal.

Layout::

    cache/<hub>/<org>--<name>/              the model files (revision: the hub's default branch)
    cache/<hub>/<org>--<name>@<revision>/   a pinned revision
    cache/<hub>/<folder>/.vlserve-complete.json   present only once every listed file is there with its size
    cache/.locks/<hub>--<folder>.lock       held while a folder is downloaded or removed
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from vlserve import settings
from vlserve.errors import Conflict, InvalidRequest, NotFound
from vlserve.hub.remote import RemoteSnapshot

logger = logging.getLogger(__name__)

MARKER = ".vlserve-complete.json"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")


@dataclass(frozen=True)
class CachedModel:
    hub: str
    repo_id: str
    revision: str | None  # None: the hub's default branch
    path: Path
    size_bytes: int
    complete: bool


def check_repo_id(repo_id: str) -> str:
    """Repo ids become folder names, so only `org/name` with letters, digits, `_`, `.`, `-` (no `--`, no `..`)."""
    if not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        raise InvalidRequest(
            f"repository id {repo_id!r} is not of the form org/name (letters, digits, '_', '.', '-'; no '--' or '..')",
            param="model_id",
        )
    return repo_id


def folder_name(repo_id: str, revision: str | None = None) -> str:
    name = check_repo_id(repo_id).replace("/", "--", 1)
    return name if revision is None else f"{name}@{quote(revision, safe='')}"


def _parse_folder_name(name: str) -> tuple[str, str | None] | None:
    base, _, revision = name.partition("@")
    if base.count("--") != 1:
        return None
    return base.replace("--", "/"), (unquote(revision) if revision else None)


def model_dir(hub: str, repo_id: str, revision: str | None = None) -> Path:
    return settings.cache_dir() / hub / folder_name(repo_id, revision)


@contextmanager
def locked(path: Path, *, wait: bool = True) -> Iterator[None]:
    """Hold the lock of one cache folder. When another launch holds it: wait (logged), or with wait=False raise
    Conflict at once."""
    from filelock import FileLock, Timeout

    lock_dir = settings.cache_dir() / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_dir / f"{path.parent.name}--{path.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout as exc:
        if not wait:
            raise Conflict(f"{path} is being downloaded by another launch; try again once it has finished") from exc
        logger.info("%s is being downloaded by another launch; waiting for it to finish", path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def missing_files(path: Path, files: dict[str, int | None]) -> list[str]:
    """Listed files that are absent from `path` or whose size differs from the listed one."""
    missing = []
    for name, size in files.items():
        file = path / name
        if not file.is_file() or (size is not None and file.stat().st_size != size):
            missing.append(name)
    return missing


def _read_marker(path: Path) -> dict | None:
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), dict) else None


def is_complete(path: Path) -> bool:
    """True only when the marker exists and every file it lists is on disk with its recorded size."""
    marker = _read_marker(path)
    return marker is not None and not missing_files(path, marker["files"])


def clear_marker(path: Path) -> None:
    (path / MARKER).unlink(missing_ok=True)


def write_marker(path: Path, *, hub: str, repo_id: str, snapshot: RemoteSnapshot) -> None:
    """Record a verified download; written to a temporary name and renamed, so a reader never sees half of it."""
    files = {name: (path / name).stat().st_size for name in snapshot.files}
    marker = {"hub": hub, "repo_id": repo_id, "revision": snapshot.revision, "endpoint": snapshot.endpoint,
              "files": files, "completed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = path / f"{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(marker, indent=1, sort_keys=True))
    os.replace(tmp, path / MARKER)


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _entries(hub: str) -> Iterator[CachedModel]:
    hub_dir = settings.cache_dir() / hub
    if not hub_dir.is_dir():
        return
    for path in sorted(p for p in hub_dir.iterdir() if p.is_dir()):
        parsed = _parse_folder_name(path.name)
        if parsed is None:
            continue
        repo_id, revision = parsed
        yield CachedModel(hub, repo_id, revision, path, dir_size(path), is_complete(path))


def list_cached() -> list[CachedModel]:
    """Every model folder in the cache, complete or not (a partial one is what an interrupted download left)."""
    return [entry for hub in settings.HUBS for entry in _entries(hub)]


def check_hub(hub: str, *, source: str = "download_hub") -> str:
    name = hub.strip().lower()
    if name not in settings.HUBS:
        raise InvalidRequest(f"{source} {hub!r} is not a known hub; choose one of {', '.join(settings.HUBS)}",
                             param="download_hub")
    return name


def remove_cached(model_id: str, hub: str | None = None) -> list[Path]:
    """Delete the cached folders of repo `model_id` (every revision; on one hub or on all); return what was removed."""
    hubs = [check_hub(hub)] if hub is not None else list(settings.HUBS)
    cached = list_cached()
    chosen = [e for e in cached if e.repo_id == model_id and e.hub in hubs]
    if not chosen:
        known = ", ".join(sorted({f"{e.repo_id} ({e.hub})" for e in cached})) or "none"
        where = f" on {hub}" if hub is not None else ""
        raise NotFound(f"{model_id}{where} is not in the cache ({settings.cache_dir()}); cached models: {known}")
    for entry in chosen:
        with locked(entry.path, wait=False):
            shutil.rmtree(entry.path)
    return [entry.path for entry in chosen]
