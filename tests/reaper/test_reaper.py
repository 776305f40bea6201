"""The process guard on real processes (no model): an owner's children and grandchildren end when the owner is
killed, however they were started; a server's start-up sweep cleans what a dead owner left when its watchdog died
too; a scope ends exactly the processes started inside it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from vlserve import reaper
from vlserve.reaper.ending import OWNER_FILE, wait_gone
from vlserve.reaper.proc import OWNERS_ENV, Ident, alive, ident, pid_namespace

# An owner: guards itself, makes a marked temporary folder, starts a child that starts a grandchild, one of them
# with an empty environment (as if its title had overwritten it: only the recorded tree finds it), prints what it
# made and sleeps until killed.
OWNER = textwrap.dedent("""
    import json, subprocess, sys, time
    from vlserve import reaper
    watchdog = reaper.guard_this_process()
    folder = reaper.tempdir("test")
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    parent_of_two = [sys.executable, "-c",
        "import subprocess, sys, time; p = subprocess.Popen(sys.argv[1:], env={}); print(p.pid, flush=True); "
        "time.sleep(600)", *sleeper]
    child = subprocess.Popen(parent_of_two, stdout=subprocess.PIPE, text=True)
    grandchild = int(child.stdout.readline())
    bare = subprocess.Popen(sleeper, env={})
    time.sleep(1.5)  # the watchdog records the tree every 0.5 s
    print(json.dumps({"pids": [child.pid, grandchild, bare.pid], "folder": folder}), flush=True)
    time.sleep(600)
""")


def start_owner() -> tuple[subprocess.Popen, list[Ident], Path]:
    proc = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    made = json.loads(proc.stdout.readline())
    idents = [ident(pid) for pid in made["pids"]]
    assert all(p is not None and alive(p) for p in idents)
    return proc, idents, Path(made["folder"])


def watchdog_of(owner_pid: int) -> Ident:
    wanted = [b"-m", b"vlserve.reaper.watchdog", str(owner_pid).encode()]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (entry / "cmdline").read_bytes().split(b"\0")[1:4] == wanted:
            return ident(int(entry.name))
    raise LookupError(f"no watchdog for {owner_pid}")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_children_end_with_their_owner(sig):
    proc, children, folder = start_owner()
    watchdog = watchdog_of(proc.pid)
    proc.send_signal(sig)
    proc.wait(timeout=10)
    assert wait_gone(children, 10) == []
    assert wait_gone([watchdog], 10) == []  # it exits once done
    assert not folder.exists()


def test_startup_sweep_cleans_what_a_dead_owner_left_when_its_watchdog_died_too():
    proc, children, folder = start_owner()
    os.kill(watchdog_of(proc.pid).pid, signal.SIGKILL)
    proc.kill()
    proc.wait(timeout=10)
    time.sleep(0.5)
    assert all(alive(p) for p in children)  # orphans now, re-parented away from the dead owner
    leftovers = reaper.sweep()
    assert {p.pid for p in children} <= {p.pid for p in leftovers.processes}
    assert folder in leftovers.folders and not folder.exists()
    assert wait_gone(children, 10) == []
    assert "process(es)" in leftovers.describe() and str(children[0].pid) in leftovers.describe()


def test_startup_sweep_finds_an_unrecorded_process_by_its_token():
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_owner = f"{pid_namespace()}.{gone.stdout.strip()}.1"  # a pid + start time that no running process has
    env = {**os.environ, OWNERS_ENV: dead_owner}
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env)
    time.sleep(0.3)
    try:
        leftovers = reaper.sweep()
        assert orphan.pid in {p.pid for p in leftovers.processes}
        assert orphan.wait(timeout=10) != 0
    finally:
        orphan.kill()


def test_startup_sweep_judges_only_what_is_surely_ours(tmp_path):
    """A marked folder others may write, a token of another pid namespace: never acted on."""
    writable = Path(tempfile.mkdtemp(prefix="vlserve-writable-"))
    writable.chmod(0o777)
    (writable / OWNER_FILE).write_text(f"{pid_namespace()}.999999.1\n")
    (writable / "processes").write_text(f"{os.getpid()} {ident(os.getpid()).start}\n")  # would name this process
    env = {**os.environ, OWNERS_ENV: f"{pid_namespace() + 1}.999999.1"}  # "dead" only if judged in the wrong namespace
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env)
    time.sleep(0.3)
    try:
        leftovers = reaper.sweep()
        assert writable.exists() and stranger.poll() is None
        assert stranger.pid not in {p.pid for p in leftovers.processes}
    finally:
        stranger.kill()
        shutil.rmtree(writable)


def test_the_watchdog_keeps_guarding_when_its_run_folder_is_removed():
    proc, children, _ = start_owner()
    try:
        for run in Path(tempfile.gettempdir()).glob("vlserve-run-*"):
            if (run / OWNER_FILE).read_text().split(".")[1] == str(proc.pid):
                shutil.rmtree(run)  # as a /tmp cleaner would
        time.sleep(1.5)
        assert all(alive(p) for p in children)  # nothing ended while the owner lives
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert wait_gone(children, 10) == []  # and still ended with it


def test_startup_sweep_leaves_live_owners_and_unmarked_folders_alone():
    proc, children, folder = start_owner()
    unmarked = Path(tempfile.mkdtemp(prefix="vlserve-unmarked-"))
    try:
        leftovers = reaper.sweep()
        assert not {p.pid for p in children} & {p.pid for p in leftovers.processes}
        assert folder.exists() and unmarked.exists() and (folder / OWNER_FILE).exists()
        assert all(alive(p) for p in children)
    finally:
        proc.kill()
        unmarked.rmdir()
    assert wait_gone(children, 10) == []


def test_a_scope_ends_what_started_inside_it_and_nothing_else():
    scope = reaper.Scope()
    environment = os.environ.get(OWNERS_ENV)
    outside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    code = ("import subprocess, sys, time; time.sleep(0.5); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], env={}); time.sleep(600)")
    with scope.tagging():  # a child that starts a grandchild (with an empty environment) after the block
        inside = subprocess.Popen([sys.executable, "-c", code])
    assert os.environ.get(OWNERS_ENV) == environment  # the scope's token was only there while tagging
    time.sleep(1.0)  # the grandchild starts
    try:
        ended = scope.end(grace_s=1.0)
        assert inside.wait(timeout=10) < 0  # ended by a signal
        assert len(ended) == 2 and inside.pid in {p.pid for p in ended}  # the child and its grandchild
        assert outside.poll() is None
    finally:
        outside.kill()
        inside.kill()
