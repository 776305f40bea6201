"""The watchdog: a small process that outlives its owner by a moment. While the owner runs it records every
process below it (pid + start time, in the owner's run folder); once the owner ends, however it ends (a clean exit,
SIGTERM, SIGKILL, the OOM killer, a crash), it ends those processes and whatever runs below them, and removes the
owner's marked temporary folders. Then it exits.

Run as `python -m vlserve.reaper.watchdog PID START TOKEN RUN_DIR LOG_FORMAT`; it imports the standard library, this
package and (to say what it ended, in the server's log format) vlserve.api.logs only. It runs in a session of its own (started with start_new_session), so a Ctrl-C, a signal to the server's
process group or a terminal hang-up does not take it down with the server, and it detaches from its owner's process
tree (see `detach`).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import time
from pathlib import Path

from vlserve.reaper.ending import clean_owner, wait_gone, write_record
from vlserve.reaper.proc import Ident, alive, descendants

log = logging.getLogger("vlserve.reaper")
POLL_S = 0.5  # how often the tree below the owner is recorded
SETTLE_S = 1.0  # how long the owner's children get to exit by themselves (e.g. multiprocessing's resource tracker)


class _Owner:
    """Waits for the owner's end: through a pidfd (Linux 5.3+: woken at once), else by polling."""

    def __init__(self, who: Ident) -> None:
        self.who = who
        try:
            self.fd: int | None = os.pidfd_open(who.pid)
        except (OSError, AttributeError):
            self.fd = None

    def ended_within(self, seconds: float) -> bool:
        if not alive(self.who):  # also covers a pid reused before the pidfd was opened
            return True
        if self.fd is None:
            time.sleep(seconds)
        else:
            select.select([self.fd], [], [], seconds)
        return not alive(self.who)


def record_until_end(owner: Ident, run_dir: Path) -> list[Ident]:
    """Keep the run folder's record of the processes below the owner (and of those that were, while they live);
    once the owner has ended, the processes recorded last."""
    waiter = _Owner(owner)
    known: dict[int, Ident] = {}
    while True:
        now = {p.pid: p for p in descendants([owner.pid])}
        merged = {**{pid: p for pid, p in known.items() if alive(p)}, **now}
        if merged != known:
            known = merged
            try:
                write_record(run_dir, known.values())
            except OSError:  # the folder was removed (a /tmp cleaner): the record in memory still counts
                pass
        if waiter.ended_within(POLL_S):
            return list(known.values())


def detach() -> None:
    """Go on in a child and let the started process exit at once: the watchdog is then nobody's child (re-parented
    to PID 1). Ray kills the child processes of a replica's worker when it ends, which would take the replica's
    watchdog with it before it has done its work."""
    if os.fork() != 0:
        os._exit(0)


def main(argv: list[str]) -> int:
    owner, token, run_dir, log_format = Ident(int(argv[0]), int(argv[1])), argv[2], Path(argv[3]), argv[4]
    detach()
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):  # a stop signal to every process (systemctl stop,
        signal.signal(sig, signal.SIG_IGN)  # a process-group kill) must not stop the one that cleans up after them
    recorded = record_until_end(owner, run_dir)
    wait_gone(recorded, SETTLE_S)
    ended, removed = clean_owner(token, recorded)
    if ended:
        from vlserve.api.logs import configure_logging

        configure_logging("info", log_format)
        log.warning("process %d ended; ended %d process(es) it left (%s) and removed its %d temporary folder(s)",
                    owner.pid, len(ended), ", ".join(str(p.pid) for p in ended), len(removed))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
