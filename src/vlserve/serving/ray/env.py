"""The process environment Ray reads when it is imported: set here, before `import ray`, so that

- usage stats are never sent (`RAY_USAGE_STATS_ENABLED=0`);
- Ray's sockets, logs and session files go to a temporary folder of this run (`RAY_TMPDIR`), not a shared /tmp/ray
  (marked as this process's: removed with what it left if it dies, see vlserve.reaper);
- a cluster this process starts gets a fresh auth token from the environment (`RAY_AUTH_TOKEN`), so Ray does not
  write one under ~/.ray;
- a cluster this process starts listens on loopback only (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`; measured: without
  it Ray binds the machine's routable address), even when something imported Ray before. Joining an existing
  cluster leaves this alone.

Values the user already set win, except that a started-here cluster always gets its own token when none is set.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys

from vlserve import reaper

_DEFAULTS = {"RAY_USAGE_STATS_ENABLED": "0"}


class _created:
    tmpdir: str | None = None  # the RAY_TMPDIR this process made (removed by `cleanup`)


def prepare(*, local: bool) -> None:
    """Set Ray's environment for this process (`local`: this process starts the cluster). Call before `import ray`;
    a second call after Ray was imported changes nothing Ray has already read."""
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
    if "RAY_TMPDIR" not in os.environ:
        os.environ["RAY_TMPDIR"] = _created.tmpdir = reaper.tempdir("ray")
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        _loopback_if_imported()


def _loopback_if_imported() -> None:
    """Ray reads the loopback switch when `ray` is first imported, and other libraries import it early (transformers
    probes for Ray Tune with find_spec("ray.tune"), which imports `ray`). The address of a node this process starts
    is chosen later, from that module constant: set it too."""
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        constants.ENABLE_RAY_CLUSTER = False


def cleanup() -> None:
    """Remove the temporary folder `prepare` made, once the Ray this process started has shut down."""
    if _created.tmpdir is not None:
        shutil.rmtree(_created.tmpdir, ignore_errors=True)
        os.environ.pop("RAY_TMPDIR", None)
        _created.tmpdir = None
