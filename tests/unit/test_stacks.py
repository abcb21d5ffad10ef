from pathlib import Path

import pytest

from asyncprof.analysis.stacks import count_samples, is_idle_frame, parse_line

MASTER = 'process 10:"python -m gunicorn"'
WORKER = 'process 11:"python -m gunicorn"'


def test_nested_process_frames_name_the_sampled_worker() -> None:
    s = parse_line(f"{MASTER};{WORKER};thread (123): MainThread;run (a.py:1);view (b.py:2) 7\n")
    assert s is not None
    assert (s.pid, s.thread, s.count) == (11, "123", 7)
    assert s.frames == ("run (a.py:1)", "view (b.py:2)")


def test_lines_without_count_are_rejected() -> None:
    assert parse_line("just some text") is None
    assert parse_line("") is None


def test_idle_leaves_match_class_qualified_names() -> None:
    assert is_idle_frame("EpollSelector.select (selectors.py:468)")
    assert is_idle_frame("Condition.wait (threading.py:331)")
    assert is_idle_frame("Arbiter.wait_for_signals (gunicorn/arbiter.py:425)")
    assert not is_idle_frame("seed_sync (asyncprof_target/views.py:23)")
    assert not is_idle_frame("select (myapp/query.py:10)")  # same name, not the selector


def test_count_samples_totals_idle_and_per_process(tmp_path: Path) -> None:
    path = tmp_path / "samples.txt"
    path.write_text(
        f"{MASTER};{WORKER};thread (1): MainThread;loop (base_events.py:1);EpollSelector.select (selectors.py:468) 5\n"
        f"{MASTER};{WORKER};thread (1): MainThread;view (v.py:3) 3\n"
        f"{MASTER};thread (2): MainThread;Arbiter.wait_for_signals (gunicorn/arbiter.py:425) 2\n"
        "garbage line\n"
    )
    counts = count_samples(path)
    assert counts.samples == 10
    assert counts.idle == 7
    assert counts.by_pid == {11: 8, 10: 2}


@pytest.mark.parametrize("leaf", [
    "_worker (concurrent/futures/thread.py:81)",  # a thread-pool worker waiting on its queue
    "EpollSelector.select (selectors.py:468)",  # an asyncio loop (or a sync worker) with nothing to do
    "Arbiter.wait_for_signals (gunicorn/arbiter.py:425)",  # the gunicorn master
    "Condition.wait (threading.py:331)",  # OTel's BatchSpanProcessor thread between exports
    "Thread._wait_for_tstate_lock (threading.py:1139)",  # Thread.join waiting for the thread to end
    "close_graceful (gunicorn/util.py:312)",  # gunicorn draining the client socket
])
def test_waiting_leaves_are_idle(leaf: str) -> None:
    assert is_idle_frame(leaf)


@pytest.mark.parametrize("leaf", [
    "ThreadPoolExecutor.submit (concurrent/futures/thread.py:175)",
    "Thread.start (threading.py:964)",
    "BaseEventLoop._run_once (asyncio/base_events.py:1922)",
    # The Python caller of a blocking C call cannot be told from the same line running: such
    # samples are kept out by recording with --gil (the thread released the GIL), not by this table.
    "CursorTracer.traced_execution (dbapi/__init__.py:880)",
])
def test_working_leaves_are_not_idle(leaf: str) -> None:
    assert not is_idle_frame(leaf)
