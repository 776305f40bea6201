"""Ending processes and removing folders that an owner left: SIGTERM, a grace period, then SIGKILL, repeated
until nothing is left (a process may start another while it is being ended).

What an owner left is found two ways (see guard.py for why both): the processes recorded while it ran (exact
identities, pid + start time) with whatever runs below them now, and the processes whose environment carries its
token. Standard library only: the watchdog process imports this.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vlserve.reaper.proc import Ident, alive, boot_id, descendants, mine, tagged

log = logging.getLogger("vlserve.reaper")
OWNER_FILE = ".vlserve-owner"  # inside a temporary folder of ours: the owner's token, then the boot id
RECORD_FILE = "processes"  # inside an owner's run folder: "PID START" per line, the processes seen below it
TEMP_PREFIX = "vlserve-"
_ROUNDS = 5


def left_by(token: str, recorded: Iterable[Ident] = ()) -> list[Ident]:
    """The live processes an owner left: those recorded below it, what runs below them now, and those carrying its
    token in their environment."""
    roots = [p for p in recorded if alive(p) and mine(p.pid)]
    found = {p.pid: p for p in [*roots, *descendants([p.pid for p in roots]), *tagged(token)]}
    found.pop(os.getpid(), None)
    return list(found.values())


def end_left(token: str, recorded: Iterable[Ident] = (), grace_s: float = 3.0) -> list[Ident]:
    """End what `token`'s owner left: SIGTERM first (vLLM's engine core cleans up on it), SIGKILL for what is left
    after `grace_s`, and again for anything started meanwhile. Returns what was ended."""
    recorded = list(recorded)
    ended: dict[int, Ident] = {}
    for round_ in range(_ROUNDS):
        victims = left_by(token, recorded)
        if not victims:
            break
        if round_ == 0 and grace_s > 0:
            _signal(victims, signal.SIGTERM)
            wait_gone(victims, grace_s)
        _signal([v for v in victims if alive(v)], signal.SIGKILL)
        wait_gone(victims, 2.0)
        recorded = [*recorded, *victims]  # their children, re-parented meanwhile, are still found below them
        ended.update((v.pid, v) for v in victims)
    return list(ended.values())


def _signal(victims: Iterable[Ident], sig: signal.Signals) -> None:
    for who in victims:
        if alive(who):  # checked just before: never signal a pid that now names another process
            try:
                os.kill(who.pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError:  # e.g. it became a set-uid program: not ours to end
                log.warning("not allowed to signal process %d", who.pid)


def wait_gone(processes: Iterable[Ident], timeout_s: float) -> list[Ident]:
    """Wait until these processes have ended, at most `timeout_s`; those still running then."""
    deadline = time.monotonic() + timeout_s
    left = [p for p in processes if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


@dataclass(frozen=True)
class OwnedFolder:
    path: Path
    token: str  # the owner's
    this_boot: bool  # made since the machine last started (else its owner and processes are long gone)


def owned_tempdir(kind: str, token: str) -> Path:
    """A new temporary folder `vlserve-KIND-...` (mode 0700) marked as belonging to `token`'s process, so that it is
    removed when that process dies without removing it (by its watchdog, or by the next server's start-up sweep)."""
    path = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{kind}-"))
    (path / OWNER_FILE).write_text(f"{token}\n{boot_id()}\n")
    return path


def owned_tempdirs() -> list[OwnedFolder]:
    """Our marked temporary folders: real folders (not links) of this user that nobody else may write, with an
    owner mark. Anything else is not ours to judge."""
    found = []
    for path in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        try:
            info = path.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
                continue
            token, _, boot = (path / OWNER_FILE).read_text().partition("\n")
        except OSError:
            continue
        if token.strip() and boot.strip():  # a mark without both is not ours to judge
            found.append(OwnedFolder(path, token.strip(), boot.strip() == boot_id()))
    return found


def write_record(folder: Path, processes: Iterable[Ident]) -> None:
    """Replace the folder's process record at once (a reader never sees half a file)."""
    part = folder / f".{RECORD_FILE}.part"
    part.write_text("".join(f"{p.pid} {p.start}\n" for p in processes))
    os.replace(part, folder / RECORD_FILE)


def read_record(folder: Path) -> list[Ident]:
    try:
        lines = (folder / RECORD_FILE).read_text().splitlines()
    except OSError:
        return []
    return [Ident(int(pid), int(start)) for pid, start in (line.split() for line in lines if line.strip())]


def clean_owner(
    token: str, recorded: Iterable[Ident] = (), grace_s: float = 3.0
) -> tuple[list[Ident], list[Path]]:
    """Everything a dead owner left: the processes (`recorded`, its run folder's record, and by token), then its
    folders. Folders from an earlier boot are only removed: their processes ended with that boot."""
    folders = [f for f in owned_tempdirs() if f.token == token]
    recorded = [*recorded, *(p for f in folders if f.this_boot for p in read_record(f.path))]
    ended = end_left(token, recorded, grace_s) if recorded or any(f.this_boot for f in folders) else []
    for folder in folders:
        shutil.rmtree(folder.path, ignore_errors=True)
    return ended, [f.path for f in folders]

