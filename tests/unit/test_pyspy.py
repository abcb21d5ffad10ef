import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncprof.collectors.proctree import children
from asyncprof.collectors.pyspy import ATTEMPTS, PTRACE_HINT, PySpies, failure_reason, process_chain, pyspy_binary
from asyncprof.processes import ProcessGroup, wait_until
from asyncprof.run import Run


def test_permission_failure_names_the_fix(tmp_path: Path) -> None:
    log = tmp_path / "pyspy.log"
    log.write_text("Error: Failed to attach to process 123: Operation not permitted (os error 1)\n"
                   "Permission Denied: Try running again with elevated permissions\n")
    reason = failure_reason(log)
    assert "Error: Failed to attach" in reason
    assert PTRACE_HINT in reason


def test_missing_log_is_said(tmp_path: Path) -> None:
    assert "no log" in failure_reason(tmp_path / "absent.log")


# --- one py-spy per process (record) ------------------------------------------------------------

#: A master that forks two workers, each busy in a function of its own, and one more on SIGUSR1.
TREE = """
import os, signal, sys, time
def spin_in_worker():
    while True:
        sum(range(1000))
def idle_master():
    while True:
        time.sleep(0.01)
def fork_worker(*_):
    if os.fork() == 0:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        spin_in_worker()
for _ in range(2):
    fork_worker()
signal.signal(signal.SIGUSR1, fork_worker)
print("ready", flush=True)
idle_master()
"""


@pytest.fixture
def tree() -> Iterator[tuple[int, list[int]]]:
    """(master pid, worker pids) of a small forking Python server, stopped by pid afterwards."""
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert wait_until(lambda: len(children(proc.pid)) == 2, 5)
        yield proc.pid, children(proc.pid)
    finally:
        os.killpg(proc.pid, 9)  # the tree's own process group: the master and its two workers
        proc.wait(5)


def test_process_chain_names_the_master_then_the_worker(tree: tuple[int, list[int]]) -> None:
    master, workers = tree
    chain = process_chain(master, workers[0])
    assert chain.startswith(f'process {master}:"{sys.executable} -c ')
    assert f';process {workers[0]}:"{sys.executable} -c ' in chain and chain.endswith('";')
    assert chain.count("process ") == 2
    assert process_chain(master, master).count("process ") == 1
    assert process_chain(workers[1], workers[0]) == process_chain(workers[0], workers[0])  # not under it


@pytest.mark.skipif(pyspy_binary() is None, reason="py-spy is not installed")
def test_one_pyspy_per_process_writes_the_samples_as_subprocesses_would(tmp_path: Path,
                                                                        tree: tuple[int, list[int]]) -> None:
    master, workers = tree
    run = Run.create(tmp_path, "pyspy")
    with ProcessGroup() as group:
        # every thread, not only the GIL holder: the idle master has stacks too
        spies = PySpies(group, run, root=master, rate=20, until_unix=time.time() + 3, gil=False)
        assert spies.follow() == [master, *workers]  # the root and its children
        assert spies.attached(0.5)
        assert spies.follow([master, *workers]) == []  # each once
        os.kill(master, signal.SIGUSR1)  # the server starts another worker: followed from its start
        assert wait_until(lambda: len(children(master)) == 3, 5)
        (late,) = set(children(master)) - set(workers)
        assert spies.follow() == [late]
        assert set(spies.process_ids()) == {f"pyspy:{p}" for p in (master, *workers, late)}
        assert spies.finish(until_unix=spies.until_unix, grace=10) is False
    workers = [*workers, late]
    lines = (run.pyspy_dir / "samples.txt").read_text().splitlines()
    assert not list(run.pyspy_dir.glob("samples-*.txt"))  # merged, then removed
    by_pid: dict[int, list[str]] = {}
    for line in lines:
        frames = line.rsplit(" ", 1)[0].split(";")
        procs = [f for f in frames if f.startswith("process ")]
        by_pid.setdefault(int(procs[-1].split(":", 1)[0].split()[1]), []).append(line)
        assert procs[0].startswith(f"process {master}:")  # every stack under the master, as --subprocesses nests them
    assert set(by_pid) == {master, *workers}
    assert all("spin_in_worker" in line for w in workers for line in by_pid[w])
    assert all("idle_master" in line for line in by_pid[master])
    # the ones sampled from the start were sampled for ~2.5 s at 20 Hz
    counts = {pid: sum(int(line.rsplit(" ", 1)[1]) for line in rows) for pid, rows in by_pid.items()}
    assert counts[workers[0]] >= 20 and counts[late] >= 5, counts


@pytest.mark.skipif(pyspy_binary() is None, reason="py-spy is not installed")
def test_a_process_pyspy_cannot_read_is_retried_then_left_out(tmp_path: Path) -> None:
    """A child that is not Python (or not yet): py-spy fails on it, a few tries, no failure overall."""
    master = subprocess.Popen([sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '30']); "
                               "print('ready', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert master.stdout is not None and master.stdout.readline().strip() == "ready"
        assert wait_until(lambda: len(children(master.pid)) == 1, 5)
        (sleeper,) = children(master.pid)
        run = Run.create(tmp_path, "pyspy")
        with ProcessGroup() as group:
            spies = PySpies(group, run, root=master.pid, rate=20, until_unix=time.time() + 4, gil=False)
            assert spies.follow() == [master.pid, sleeper]
            assert wait_until(lambda: spies.procs[sleeper].popen.poll() not in (None, 0), 10)
            for _ in range(ATTEMPTS + 1):
                spies.follow()
                assert wait_until(lambda: spies.procs[sleeper].popen.poll() not in (None, 0), 10)
            assert spies.attempts == {master.pid: 1, sleeper: ATTEMPTS}
            assert spies.finish(until_unix=spies.until_unix, grace=10) is False
        text = (run.pyspy_dir / "samples.txt").read_text()
        assert f"process {master.pid}:" in text and f"process {sleeper}:" not in text
    finally:
        os.killpg(master.pid, 9)
        master.wait(5)
