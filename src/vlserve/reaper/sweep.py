"""The start-up sweep: what a vlserve process that died left behind although its watchdog should have cleaned it
(the watchdog was killed too, e.g. by `kill -9` on both): the processes its run folder recorded (exact identities)
and those carrying its token, and its marked temporary folders (its run folder, a private Ray cluster's session
files, vLLM's model views). All of it is ours beyond doubt, so it is ended and removed, and the log says what.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vlserve.reaper.ending import clean_owner, end_left, owned_tempdirs
from vlserve.reaper.proc import Ident, alive, available, mine, owner_of, owner_tokens, pids


@dataclass
class Leftovers:
    processes: list[Ident] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.processes or self.folders)

    def describe(self) -> str:
        pids_ = ", ".join(str(p.pid) for p in self.processes) or "none"
        folders = ", ".join(str(f) for f in self.folders) or "none"
        return (f"cleaned what a vlserve process that died had left: {len(self.processes)} process(es) ({pids_}), "
                f"{len(self.folders)} temporary folder(s) ({folders})")  # fmt: skip


def _dead(token: str) -> bool:
    owner = owner_of(token)
    return owner is not None and not alive(owner)


def orphan_tokens() -> set[str]:
    """The tokens of dead owners that some running process of this user still carries."""
    me = os.getpid()
    return {t for pid in pids() if pid != me and mine(pid) for t in owner_tokens(pid) if _dead(t)}


def sweep() -> Leftovers:
    """End and remove what dead owners left: first by their run folders' records (and tokens), then by the tokens
    that running processes still carry."""
    found = Leftovers()
    if not available():
        return found
    for token in {f.token for f in owned_tempdirs() if not f.this_boot or _dead(f.token)}:
        ended, folders = clean_owner(token)
        found.processes += ended
        found.folders += folders
    for token in orphan_tokens():
        found.processes += end_left(token)
    return found
