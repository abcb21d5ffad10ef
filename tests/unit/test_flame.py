"""build_flame / diff_flame on small hand-written collapsed stacks with known answers."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from asyncprof.analysis.categories import CATEGORIES
from asyncprof.analysis.cpu_profile import cpu_profile
from asyncprof.analysis.flame import (
    NO_FRAMES, ROOT_CATEGORY, WAITING, Flame, FlameNode, build_flame, collapsed_lines, diff_flame,
)
from asyncprof.errors import AsyncprofError, CorruptRunError, UsageError
from asyncprof.renderers.speedscope import flame_to_speedscope
from asyncprof.run import Run
from tests.unit.synthetic import WINDOW, Req, make_run, trace, write_requests

MASTER = 'process 10:"python -m gunicorn"'
SYNC = ("SyncWorker.handle_request (gunicorn/workers/sync.py:184);"
        "WSGIHandler.__call__ (django/core/handlers/wsgi.py:124)")
LOOP = ("UvicornWorker.run (uvicorn_worker/_workers.py:90);BaseEventLoop.run_forever (asyncio/base_events.py:607);"
        "BaseEventLoop._run_once (asyncio/base_events.py:1922);Handle._run (asyncio/events.py:80)")
S2A = f"{LOOP};MiddlewareMixin.__acall__ (django/utils/deprecation.py:138);SyncToAsync.__call__ (asgiref/sync.py:567)"
HOP = f"{S2A};ThreadPoolExecutor.submit (concurrent/futures/thread.py:175);Thread.start (threading.py:964)"
VIEW = f"{LOOP};seed_async (asyncprof_target/views.py:33)"
IDLE = f"{LOOP.rsplit(';', 1)[0]};EpollSelector.select (selectors.py:468)"


def line(stack: str, count: int, pid: int = 11, thread: int = 1) -> str:
    return f'{MASTER};process {pid}:"python -m gunicorn";thread ({thread}): MainThread;{stack} {count}\n'


def samples_run(parent: Path, lines: Sequence[str], *, requests: int = 10, rate: int | None = 20,
                outside: int = 0, **manifest: Any) -> Run:
    """A run whose samples file holds *lines*, with *requests* client requests in the window."""
    instruments = {"pyspy": {"enabled": True, **({"rate_hz": rate} if rate else {})}}
    run = make_run(parent, instruments=instruments, **manifest)
    reqs = [Req(trace(i), 5.0, start=WINDOW[0] + 0.5) for i in range(requests)]
    reqs += [Req(trace(1000 + i), 5.0, start=WINDOW[1] + 1) for i in range(outside)]  # after the window
    write_requests(run, reqs)
    (run.pyspy_dir / "samples.txt").write_text("".join(lines))
    return run


def find(node: FlameNode, *names: str) -> FlameNode:
    for name in names:
        node = next(c for k, c in node.children.items() if k.startswith(name))
    return node


BASIC = [line(VIEW, 30), line(HOP, 20), line(S2A, 10), line(LOOP, 40, pid=12), line(IDLE, 25, pid=12)]


def test_tree_counts_are_inclusive_and_categories_are_the_reports(tmp_path: Path) -> None:
    run = samples_run(tmp_path, BASIC, requests=10, outside=5)
    flame = build_flame(run)
    assert flame.samples == flame.root.samples == 100  # the 25 waiting samples are off-CPU
    assert flame.file_samples == 125 and not flame.wall
    assert flame.root.name == "all" and flame.root.category == ROOT_CATEGORY
    worker = find(flame.root, "UvicornWorker.run")  # the process and thread frames are merged away
    assert list(flame.root.children) == ["UvicornWorker.run (uvicorn_worker/_workers.py:90)"]
    handle = find(worker, "BaseEventLoop.run_forever", "BaseEventLoop._run_once", "Handle._run")
    assert (handle.samples, handle.self_samples) == (100, 40)
    acall = find(handle, "MiddlewareMixin.__acall__")
    s2a = find(acall, "SyncToAsync.__call__")
    start = find(s2a, "ThreadPoolExecutor.submit", "Thread.start")
    assert (s2a.samples, s2a.self_samples, start.samples) == (30, 10, 20)
    # Every frame is coloured as a stack ending there would be billed.
    assert worker.category == "http_server"
    assert handle.category == "event_loop"
    assert acall.category == "django"
    assert s2a.category == start.category == "thread_pool"
    assert find(handle, "seed_async").category == "app"
    # Self samples per category are exactly the report's CPU profile.
    profile = cpu_profile(run.pyspy_dir / "samples.txt")
    counts = flame.category_samples()
    assert {c: counts[c] for c in CATEGORIES} == profile.category_samples
    assert counts[WAITING] == 0
    # Time: 20 Hz -> 50 ms a sample; 10 requests in the window (the 5 after it do not count).
    assert flame.interval_ms == 50.0 and flame.requests == 10
    assert flame.ms(s2a) == 1500.0 and flame.ms_per_request(s2a) == 150.0
    assert flame.share(s2a) == 0.3 and flame.root.value == 100.0


def test_wall_keeps_waiting_stacks_and_marks_them(tmp_path: Path) -> None:
    flame = build_flame(samples_run(tmp_path, BASIC), wall=True)
    assert flame.wall and flame.samples == 125
    select = find(flame.root, "UvicornWorker.run", "BaseEventLoop.run_forever", "BaseEventLoop._run_once",
                  "EpollSelector.select")
    assert select.waiting and select.idle_samples == 25
    assert not flame.root.waiting and flame.root.idle_samples == 25
    assert flame.category_samples()[WAITING] == 25


def test_pid_filter_keeps_one_worker_and_rejects_unknown_pids(tmp_path: Path) -> None:
    run = samples_run(tmp_path, BASIC)
    flame = build_flame(run, pids=[12])
    assert flame.samples == 40 and flame.pids == (12,)
    assert flame.requests == 10  # ms per request of the whole run's requests
    with pytest.raises(UsageError, match=r"no samples from pid 99 .*pids with samples: 11, 12"):
        build_flame(run, pids=[99])


def test_category_filter_keeps_the_stacks_billed_to_it(tmp_path: Path) -> None:
    run = samples_run(tmp_path, BASIC)
    flame = build_flame(run, category="thread_pool")
    assert flame.samples == 30 and flame.category == "thread_pool"
    assert flame.category_samples()["thread_pool"] == 30
    with pytest.raises(UsageError, match="unknown category 'threads'"):
        build_flame(run, category="threads")
    with pytest.raises(AsyncprofError, match="no on-CPU samples in category db_driver"):
        build_flame(run, category="db_driver")


def test_stacks_without_python_frames_are_one_thread_pool_frame(tmp_path: Path) -> None:
    lines = [f'{MASTER};process 11:"x";thread (7): Thread-3 5\n', line(VIEW, 5)]
    flame = build_flame(samples_run(tmp_path, lines))
    empty = flame.root.children[NO_FRAMES]
    assert (empty.samples, empty.category) == (5, "thread_pool")


@pytest.mark.parametrize(("instruments", "config", "interval"), [
    ({"rate_hz": 100}, {}, 10.0),
    ({}, {"pyspy_rate": 50}, 20.0),
    ({}, {}, 50.0),  # a manifest without the rate: recorded when 20 Hz was the default
])
def test_sample_interval_comes_from_the_manifest(tmp_path: Path, instruments: dict[str, Any],
                                                 config: dict[str, Any], interval: float) -> None:
    run = samples_run(tmp_path, BASIC, rate=None)
    run.update(instruments={"pyspy": {"enabled": True, **instruments}},
               config={**run.manifest["config"], **config})
    assert build_flame(run).interval_ms == interval


def test_all_waiting_suggests_wall(tmp_path: Path) -> None:
    with pytest.raises(AsyncprofError, match=r"no on-CPU samples .*\(try --wall\)"):
        build_flame(samples_run(tmp_path, [line(IDLE, 5)]))


def test_missing_empty_and_corrupt_samples(tmp_path: Path) -> None:
    run = samples_run(tmp_path, [])
    with pytest.raises(AsyncprofError, match="no py-spy samples"):
        build_flame(run)
    (run.pyspy_dir / "samples.txt").write_text("garbage\n\x00\x01 binary\n")
    with pytest.raises(CorruptRunError, match="holds no py-spy collapsed stack"):
        build_flame(run)
    (run.pyspy_dir / "samples.txt").unlink()
    with pytest.raises(AsyncprofError, match="is missing"):
        build_flame(run)


def test_damaged_lines_are_skipped_with_a_note(tmp_path: Path) -> None:
    flame = build_flame(samples_run(tmp_path, [*BASIC, "truncated line without coun", "\n"]))
    assert flame.samples == 100 and flame.skipped_lines == 1
    assert any("1 unreadable lines" in n for n in flame.notes)


def test_no_requests_means_no_ms_per_request(tmp_path: Path) -> None:
    flame = build_flame(samples_run(tmp_path, BASIC, requests=0))
    assert flame.requests is None and flame.ms_per_request(flame.root) is None
    assert any("no client request" in n for n in flame.notes)


def test_diff_is_normalised_per_request(tmp_path: Path) -> None:
    # RUN: 100 samples over 10 requests at 20 Hz = 500 ms/request; OTHER: 200 samples at 100 Hz
    # (10 ms each) over 40 requests = 50 ms/request.  Raw samples would say OTHER is busier.
    a = build_flame(samples_run(tmp_path / "a", BASIC, requests=10, rate=20))
    b_lines = [line(VIEW, 80), line(SYNC, 120)]
    b = build_flame(samples_run(tmp_path / "b", b_lines, requests=40, rate=100))
    d = diff_flame(a, b)
    assert d.is_diff and d.other is not None and d.other.requests == 40
    assert d.ms_per_request(d.root) == 500.0
    assert d.other_ms_per_request(d.root) == 50.0
    assert d.delta_ms(d.root) == 450.0
    view = find(d.root, "UvicornWorker.run", "BaseEventLoop.run_forever", "BaseEventLoop._run_once",
                "Handle._run", "seed_async")
    assert view.samples == 30 and view.other_samples == 80
    assert d.ms_per_request(view) == 150.0 and d.other_ms_per_request(view) == 20.0
    assert d.delta_ms(view) == pytest.approx(130.0)
    sync = find(d.root, "SyncWorker.handle_request")  # only in OTHER: RUN spends less there
    assert sync.samples == 0 and d.delta_ms(sync) == pytest.approx(-30.0)
    hop = find(d.root, "UvicornWorker.run", "BaseEventLoop.run_forever", "BaseEventLoop._run_once",
               "Handle._run", "MiddlewareMixin.__acall__", "SyncToAsync.__call__")
    assert d.delta_ms(hop) == 150.0 and hop.category == "thread_pool"
    # Widths in ms per request: each frame the larger of the two, and children always fit.
    assert view.value == 150.0 and sync.value == pytest.approx(30.0)
    for node, _ in d.root.walk():
        assert node.value >= sum(c.value for c in node.children.values()) - 1e-9
        assert node.value >= max(node.samples * 50.0 / 10, node.other_samples * 10.0 / 40) - 1e-9


def test_diff_needs_requests_on_both_sides(tmp_path: Path) -> None:
    a = build_flame(samples_run(tmp_path / "a", BASIC))
    b = build_flame(samples_run(tmp_path / "b", BASIC, requests=0))
    with pytest.raises(AsyncprofError, match="normalised per request"):
        diff_flame(a, b)


def test_collapsed_and_speedscope_forms_keep_every_sample(tmp_path: Path) -> None:
    flame = build_flame(samples_run(tmp_path, BASIC))
    lines = list(collapsed_lines(flame))
    assert sum(int(x.rsplit(" ", 1)[1]) for x in lines) == flame.samples
    assert f"{HOP} 20\n" in lines and f"{LOOP} 40\n" in lines  # process and thread frames merged away
    doc = flame_to_speedscope(flame, "t")
    profile = doc["profiles"][0]
    assert profile["unit"] == "milliseconds" and sum(profile["weights"]) == flame.samples * 50.0
    names = [f["name"] for f in doc["shared"]["frames"]]
    assert [names[i] for i in profile["samples"][profile["weights"].index(1000.0)]][-1] == "Thread.start"


def test_diff_has_no_collapsed_form(tmp_path: Path) -> None:
    a = build_flame(samples_run(tmp_path, BASIC))
    with pytest.raises(UsageError):
        list(collapsed_lines(diff_flame(a, a)))


def test_flame_type_is_plain_data() -> None:
    flame = Flame(root=FlameNode("all", ROOT_CATEGORY, samples=1, value=1.0), run_id="r", mode=None,
                  interval_ms=50.0, requests=None)
    assert flame.max_depth() == 0 and flame.delta_ms(flame.root) is None
