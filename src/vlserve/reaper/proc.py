"""What /proc says about a process: its identity (pid + start time, so a reused pid is never mistaken for the
process it replaced), whether it still runs, its parent, its owner (user), and the vlserve owner tokens in its
environment. A token also names the pid namespace it was made in: a pid means nothing in another one (a container
seen from its host), so a token from another namespace is never judged.

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
        return f"{pid_namespace()}.{self.pid}.{self.start}"


def available() -> bool:
    """Whether this system has Linux's /proc (without it nothing here can work, and nothing is done)."""
    return (PROC / "self" / "stat").exists()


def pid_namespace() -> int:
    try:
        return os.stat(PROC / "self" / "ns" / "pid").st_ino
    except OSError:
        return 0


def boot_id() -> str:
    try:
        return (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


def mine(pid: int) -> bool:
    """Whether the process belongs to this user (nothing of another user is ever signalled)."""
    try:
        return os.stat(PROC / str(pid)).st_uid == os.geteuid()
    except OSError:
        return False


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


def running(pid: int) -> Ident | None:
    """The process with this pid, if it runs (one read of /proc; a zombie has ended)."""
    fields = _stat_fields(pid)
    return None if fields is None or fields[0] == "Z" else Ident(pid, int(fields[19]))


def me() -> Ident:
    found = ident(os.getpid())
    if found is None:  # /proc is not mounted: nothing here can work
        raise RuntimeError("/proc is not available; vlserve's process guard needs Linux /proc")
    return found


def parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def alive(who: Ident) -> bool:
    """True while that very process runs (a zombie has ended: it holds no memory, only its exit status)."""
    fields = _stat_fields(who.pid)
    return fields is not None and int(fields[19]) == who.start and fields[0] != "Z"


def owner_of(token: str) -> Ident | None:
    """The process a token names ("NS.PID.START" or "NS.PID.START.SCOPE"), or None for a malformed token or one
    made in another pid namespace."""
    parts = token.split(".")
    if len(parts) < 3 or not all(p.isdigit() for p in parts[:3]) or int(parts[0]) != pid_namespace():
        return None
    return Ident(int(parts[1]), int(parts[2]))


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
        if pid != me and mine(pid) and token in owner_tokens(pid):
            who = running(pid)
            if who is not None:
                found.append(who)
    return found


def children(pid: int) -> list[Ident]:
    """The live processes whose parent is `pid`, now."""
    found = (running(child) for child in pids() if parent(child) == pid)
    return [who for who in found if who is not None]


def descendants(roots: list[int]) -> list[Ident]:
    """The live processes below `roots` in the process tree now (the roots themselves excluded)."""
    by_parent: dict[int, list[int]] = {}
    for pid in pids():
        ppid = parent(pid)
        if ppid is not None:
            by_parent.setdefault(ppid, []).append(pid)
    found, todo, seen = [], [c for r in roots for c in by_parent.get(r, ())], set(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        who = running(pid)
        if who is not None and mine(pid):
            found.append(who)
        todo.extend(by_parent.get(pid, ()))
    return found
