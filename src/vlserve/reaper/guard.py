"""Owning processes: nothing vlserve starts for a model outlives the process that started it.

How the processes of an owner are found, with no cooperation from them: vLLM starts its engine core and workers
through multiprocessing (spawn here, fork where vLLM chooses it), Ray starts its own daemons and workers, and vlserve runs no code in those children
before they start (they may start children of their own, too).
- The owner's watchdog records the process tree below the owner while it runs (pid + start time, so a reused pid
  is never mistaken), every 0.5 s, into the owner's run folder; after the owner died and they were re-parented to
  PID 1, the recorded processes and everything below them are still found.
- Every child also inherits the owner's token in its environment (`VLSERVE_OWNERS`), visible in /proc/PID/environ
  for a child that started a program (exec): this finds one started in the last moment before the owner died,
  before the watchdog saw it. It does not find a forked child that started no program, nor vLLM's or Ray's
  processes once they set their process title (setproctitle overwrites the environment's memory), which is why
  the tree is recorded.
Only processes and folders of this user, in this pid namespace and (folders) marked since this boot are judged.
Not chosen: PR_SET_PDEATHSIG needs code in each child and fires when the *thread* that started the child ends (vLLM
is started from a worker thread); a process group of our own would take the server out of its terminal's foreground
group (Ctrl-C would no longer reach it); cgroups need privileges that a user's machine does not grant.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import vlserve
from vlserve.reaper.ending import end_left, owned_tempdir
from vlserve.reaper.proc import OWNERS_ENV, Ident, available, children, me

log = logging.getLogger("vlserve.reaper")
_lock = threading.RLock()  # os.environ is process-wide: one tagging scope at a time


class _state:
    owner: Ident | None = None
    warned = False


def guard_this_process(log_format: str = "json") -> Ident | None:
    """Put this process's token in the environment every child inherits from now on, and start a watchdog that
    ends those children when this process ends (it logs what it ended in `log_format`: json or text). Idempotent.
    None where it cannot (no Linux /proc, or the watchdog did not start: said once in the log)."""
    if not available():
        _say_once("this system has no Linux /proc: processes vlserve starts for a model may outlive it")
        return None
    owner = me()
    if _state.owner == owner:
        return owner
    with _lock:
        if _state.owner == owner:
            return owner
        # multiprocessing's resource tracker serves every user of multiprocessing in this process: started now,
        # it is not counted as a model's (see Scope), and it ends with this process
        resource_tracker.ensure_running()
        run_dir = owned_tempdir("run", owner.token)
        try:
            _start_watchdog(owner, run_dir, log_format)
        except (OSError, subprocess.SubprocessError) as exc:
            shutil.rmtree(run_dir, ignore_errors=True)
            _say_once(f"the process watchdog did not start ({exc}): processes vlserve starts may outlive it")
            return None
        inherited = os.environ.get(OWNERS_ENV, "")
        os.environ[OWNERS_ENV] = ",".join(t for t in (inherited, owner.token) if t)
        _state.owner = owner
        return owner


def _say_once(message: str) -> None:
    if not _state.warned:
        _state.warned = True
        log.warning(message)


def _start_watchdog(owner: Ident, run_dir: Path, log_format: str) -> None:
    """Start the watchdog; the process started here detaches it and exits at once (waited for here)."""
    env = {k: v for k, v in os.environ.items() if k != OWNERS_ENV}  # never a victim of a sweep itself
    package_root = str(Path(vlserve.__file__).resolve().parent.parent)  # importable as here, installed or not
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    subprocess.run(
        [sys.executable, "-m", "vlserve.reaper.watchdog", str(owner.pid), str(owner.start), owner.token,
         str(run_dir), log_format],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True,
        check=True, timeout=60,
    )  # fmt: skip


def tempdir(kind: str) -> str:
    """A temporary folder `vlserve-KIND-...` that the watchdog (or the next server's start-up) removes if this
    process dies without removing it."""
    owner = guard_this_process()
    if owner is None:
        return tempfile.mkdtemp(prefix=f"vlserve-{kind}-")
    return str(owned_tempdir(kind, owner.token))


class Scope:
    """The processes one model starts inside this process (vLLM's engine core and workers): those that appear below
    this process while `tagging` (which also puts a token of the scope in their environment), ended together with
    everything below them (`end`) when the model is unloaded, whatever vLLM's own shutdown left. If this process
    dies first, its watchdog ends them (they are below it)."""

    def __init__(self) -> None:
        owner = guard_this_process()
        self.token = f"{owner.token}.{uuid.uuid4().hex[:12]}" if owner else ""  # "": nothing to do here
        self.started: list[Ident] = []

    @contextlib.contextmanager
    def tagging(self) -> Iterator[None]:
        """Processes started inside this block carry the scope's token. Holds a process-wide lock meanwhile (two
        models starting at once start their engines one after the other)."""
        if not self.token:
            yield
            return
        with _lock:
            resource_tracker.ensure_running()  # this process's, not the scope's (restarted here if it had died)
            before = os.environ.get(OWNERS_ENV)
            existing = set(children(os.getpid()))
            os.environ[OWNERS_ENV] = ",".join(t for t in (before, self.token) if t)
            try:
                yield
            finally:
                if before is None:
                    os.environ.pop(OWNERS_ENV, None)
                else:
                    os.environ[OWNERS_ENV] = before
                # the children started meanwhile (what runs below them is found when the scope ends)
                self.started += [p for p in children(os.getpid()) if p not in existing]

    def end(self, grace_s: float = 5.0) -> list[Ident]:
        """End what is left of the scope's processes (blocking: run it in a thread)."""
        return end_left(self.token, self.started, grace_s) if self.token else []
