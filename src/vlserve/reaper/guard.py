"""Owning processes: nothing vlserve starts for a model outlives the process that started it.

How the processes of an owner are found, with no cooperation from them: vLLM starts its engine core and workers
through multiprocessing (spawn), Ray starts its own daemons and workers, and vlserve runs no code in those children
before they start (they may start children of their own, too).
- The owner's watchdog records the process tree below the owner while it runs (pid + start time, so a reused pid
  is never mistaken), every 0.5 s, into the owner's run folder; after the owner died and they were re-parented to
  PID 1, the recorded processes and everything below them are still found.
- Every child also inherits the owner's token in its environment (`VLSERVE_OWNERS`), visible in /proc/PID/environ:
  this finds a child started in the last moment before the owner died, before the watchdog saw it. It does not
  find vLLM's or Ray's processes once they set their process title (setproctitle overwrites the environment's
  memory), which is why the tree is recorded.
Not chosen: PR_SET_PDEATHSIG needs code in each child and fires when the *thread* that started the child ends (vLLM
is started from a worker thread); a process group of our own would take the server out of its terminal's foreground
group (Ctrl-C would no longer reach it); cgroups need privileges that a user's machine does not grant.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

from vlserve.reaper.ending import end_left, me, owned_tempdir
from vlserve.reaper.proc import OWNERS_ENV, Ident, descendants

_lock = threading.Lock()  # os.environ is process-wide: one tagging scope at a time


class _state:
    owner: Ident | None = None


def owner_token() -> str:
    """This process's token; guards it (starts its watchdog) the first time it is asked for."""
    return guard_this_process().token


def guard_this_process(log_format: str = "json") -> Ident:
    """Put this process's token in the environment every child inherits from now on, and start a watchdog that
    ends those children when this process ends (it logs what it ended in `log_format`: json or text). Idempotent."""
    with _lock:
        owner = me()
        if _state.owner == owner:
            return owner
        _state.owner = owner
        # multiprocessing's resource tracker serves every user of multiprocessing in this process: started now,
        # it is not counted as a model's (see Scope), and it ends with this process
        resource_tracker.ensure_running()
        inherited = os.environ.get(OWNERS_ENV, "")
        os.environ[OWNERS_ENV] = ",".join(t for t in (inherited, owner.token) if t)
        _start_watchdog(owner, owned_tempdir("run", owner.token), log_format)
        return owner


def _start_watchdog(owner: Ident, run_dir: Path, log_format: str) -> None:
    """Start the watchdog; the process started here detaches it and exits at once (waited for here)."""
    env = {k: v for k, v in os.environ.items() if k != OWNERS_ENV}  # never a victim of a sweep itself
    subprocess.run(
        [sys.executable, "-m", "vlserve.reaper.watchdog", str(owner.pid), str(owner.start), owner.token,
         str(run_dir), log_format],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True,
        check=True, timeout=60,
    )  # fmt: skip


def tempdir(kind: str) -> str:
    """A temporary folder `vlserve-KIND-...` that the watchdog (or the next server's start-up) removes if this
    process dies without removing it."""
    return str(owned_tempdir(kind, owner_token()))


class Scope:
    """The processes one model starts inside this process (vLLM's engine core and workers): those that appear below
    this process while `tagging` (which also puts a token of the scope in their environment), ended together with
    everything below them (`end`) when the model is unloaded, whatever vLLM's own shutdown left. If this process
    dies first, its watchdog ends them (they are below it)."""

    def __init__(self) -> None:
        self.token = f"{owner_token()}.{uuid.uuid4().hex[:12]}"
        self.started: list[Ident] = []

    @contextlib.contextmanager
    def tagging(self) -> Iterator[None]:
        """Processes started inside this block carry the scope's token. Holds a process-wide lock meanwhile (two
        models starting at once start their engines one after the other)."""
        with _lock:
            resource_tracker.ensure_running()  # this process's, not the scope's (restarted here if it had died)
            before = os.environ.get(OWNERS_ENV)
            existing = set(descendants([os.getpid()]))
            os.environ[OWNERS_ENV] = ",".join(t for t in (before, self.token) if t)
            try:
                yield
            finally:
                if before is None:
                    os.environ.pop(OWNERS_ENV, None)
                else:
                    os.environ[OWNERS_ENV] = before
                self.started += [p for p in descendants([os.getpid()]) if p not in existing]

    def end(self, grace_s: float = 5.0) -> list[Ident]:
        """End what is left of the scope's processes (blocking: run it in a thread)."""
        return end_left(self.token, self.started, grace_s)
