"""A second report of an unchanged run comes from report.cache.json; any change rebuilds it."""

import os
from pathlib import Path
from typing import Any

import orjson

from asyncprof.analysis.report import build_report
from asyncprof.report_cache import CACHE, cache_key, cached_report
from asyncprof.run import Run

from .synthetic import Req, make_run, trace, write_records, write_requests


def _run(tmp_path: Path) -> Run:
    run = make_run(tmp_path)
    reqs = [Req(trace(i), 20.0 + i, start=1001.0 + i / 10, us={"wall_us": 15_000, "cpu_us": 2000}) for i in range(30)]
    write_requests(run, reqs)
    write_records(run, 101, reqs)
    return run


class _Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, run: Run) -> dict[str, Any]:
        self.calls += 1
        return build_report(run)


def test_second_report_is_the_cached_one_and_equal(tmp_path: Path) -> None:
    run = _run(tmp_path)
    build = _Counting()
    first = cached_report(run, build)
    second = cached_report(Run.load(run.path), build)
    assert build.calls == 1
    assert orjson.dumps(second) == orjson.dumps(first)
    assert first["requests"] > 0 and (run.path / CACHE).is_file()
    assert os.stat(run.path / CACHE).st_mode & 0o077 == 0  # owner-only whatever the umask


def test_a_changed_input_rebuilds(tmp_path: Path) -> None:
    run = _run(tmp_path)
    build = _Counting()
    first = cached_report(run, build)
    with run.requests_path.open("a") as f:
        f.write(f"1005.000000\t/items/\t500\t9.000\t0\t{trace(99)}\tboom\n")
    second = cached_report(run, build)
    assert build.calls == 2 and second["errors"] == first["errors"] + 1


def test_a_damaged_or_foreign_cache_is_ignored(tmp_path: Path) -> None:
    run = _run(tmp_path)
    build = _Counting()
    for junk in (b"\x00garbage", b"[1, 2]", orjson.dumps({"key": "someone else's", "report": {"requests": -1}}),
                 orjson.dumps({"key": cache_key(run), "report": "not a report"})):
        (run.path / CACHE).write_bytes(junk)
        assert cached_report(run, build)["requests"] > 0
    assert build.calls == 4


def test_a_read_only_run_still_reports(tmp_path: Path) -> None:
    run = _run(tmp_path)
    os.chmod(run.path, 0o500)
    try:
        build = _Counting()
        if os.access(run.path, os.W_OK):  # root writes anyway: then the cache is simply written
            assert cached_report(run, build)["requests"] > 0
        else:
            assert cached_report(run, build)["requests"] > 0 and not (run.path / CACHE).exists()
    finally:
        os.chmod(run.path, 0o700)
