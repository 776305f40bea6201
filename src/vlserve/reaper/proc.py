"""What /proc says about a process: its identity (pid + start time, so a reused pid is never mistaken for the
process it replaced), whether it still runs, its parent, and the vlserve owner tokens in its environment.

Standard library only: the watchdog process imports this and nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
OWNERS_ENV = "VLSERVE_OWNERS"  # comma-separated owner tokens every process started under an owner inherits
_OWNERS_PREFIX = (OWNERS_ENV + "=").encode()


@dataclass(frozen=True)
class Ident:
    """A process as it was when seen: its pid and its start time in clock ticks since boot."""

    pid: int
    start: int

    @property
    def token(self) -> str:
        return f"{self.pid}.{self.start}"


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may contain spaces and parentheses), or None when gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def ident(pid: int) -> Ident | None:
    fields = _stat_fields(pid)
    return None if fields is None else Ident(pid, int(fields[19]))


def parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def alive(who: Ident) -> bool:
    """True while that very process runs (a zombie has ended: it holds no memory, only its exit status)."""
    fields = _stat_fields(who.pid)
    return fields is not None and int(fields[19]) == who.start and fields[0] != "Z"


def owner_of(token: str) -> Ident | None:
    """The process a token names ("PID.START" or "PID.START.SCOPE"), or None for a malformed token."""
    parts = token.split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return Ident(int(parts[0]), int(parts[1]))


def owner_tokens(pid: int) -> tuple[str, ...]:
    """The owner tokens in a process's environment as it was started (empty when unreadable: another user's
    process, a zombie, or gone)."""
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return ()
    for entry in environ.split(b"\0"):
        if entry.startswith(_OWNERS_PREFIX):
            value = entry[len(_OWNERS_PREFIX) :].decode(errors="replace")
            return tuple(t for t in value.split(",") if t)
    return ()


def pids() -> Iterator[int]:
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            yield int(entry.name)


def tagged(token: str) -> list[Ident]:
    """Every live process (but this one) started under `token`, directly or through its ancestors."""
    me = os.getpid()
    found = []
    for pid in pids():
        if pid != me and token in owner_tokens(pid):
            who = ident(pid)
            if who is not None and alive(who):
                found.append(who)
    return found



def descendants(roots: list[int]) -> list[Ident]:
    """The live processes below `roots` in the process tree now (the roots themselves excluded)."""
    children: dict[int, list[int]] = {}
    for pid in pids():
        ppid = parent(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    found, todo, seen = [], [c for r in roots for c in children.get(r, ())], set(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        who = ident(pid)
        if who is not None and alive(who):
            found.append(who)
        todo.extend(children.get(pid, ()))
    return found
