"""A damaged run directory gives a report of what is still readable with a warning, or one line and an exit code.

A complete synthetic run (manifest, requests, accounting records and summaries, spans, py-spy
samples, worker files) is damaged: each file kind deleted in turn, each truncated at a random
offset, garbage or wrong-typed values written into ``manifest.json``.  ``asyncprof report --json``
(its functions in-process, and the CLI entry point for the one-line errors) must then either
report with a warning, or fail with one ``error:`` line and a non-zero exit, never a traceback.
"""

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncprof.analysis.report import build_report
from asyncprof.cli import main
from asyncprof.errors import AsyncprofError, CorruptRunError
from asyncprof.renderers import render_report
from asyncprof.run import MANIFEST, Run
from asyncprof.worker.record_format import ACCOUNTING_DIR

from .synthetic import Req, make_run, trace, write_records, write_requests, write_summary

REQUESTS = [Req(trace(i), 20.0 + i, start=1001.0 + i / 10,
                us={"wall_us": 20_000 + 1000 * i, "cpu_us": 2000, "hops": 3}) for i in range(20)]
STACKS = ('process 101:"gunicorn";thread (0x7f01): MainThread;run (app.py:1);'
          "view (django/core/handlers/base.py:9) 7\n"
          'process 102:"gunicorn";thread (12): MainThread;select (selectors.py:468) 3\n')


def _span_line(pid: int, trace_id: str) -> bytes:
    return orjson.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "process.pid", "value": {"intValue": pid}}]},
        "scopeSpans": [{"scope": {"name": "t"}, "spans": [
            {"traceId": trace_id, "spanId": "00f067aa0ba902b7", "name": "GET /items/", "kind": 2,
             "startTimeUnixNano": "1", "endTimeUnixNano": "2", "attributes": []}]}]}]}) + b"\n"


def full_run(parent: Path) -> Run:
    """A synthetic run with every file kind a recording writes (all instruments on)."""
    run = make_run(parent, instruments={
        "pyspy": {"enabled": True}, "otel": {"enabled": True}, "pyinstrument": {"enabled": True},
        "accounting": {"enabled": True}},
        # the rest of a recorded manifest's sections, for the wrong-typed-field cases to reach
        server={"interface": "asgi", "mode": "async", "host": "127.0.0.1", "port": 8000, "threads": None},
        load={"model": "closed", "processes": 1, "users": 10},
        cpu_window={"seconds": 10.0, "locust_cpu_s": 0.5, "machine_busy_share": 0.9,
                    "workers_cpu_s": {"101": 0.5, "102": None}},
        database={"kind": "embedded", "server_version": "18"}, pids={"server": 100, "workers": [101, 102]},
        pinning=None, faults=[{"kind": "worker_died", "pid": 101, "unix": 1005.0}])
    write_requests(run, REQUESTS)
    for pid, part in ((101, REQUESTS[::2]), (102, REQUESTS[1::2])):
        write_records(run, pid, part)
        write_summary(run, pid, requests=len(part), hop_sites={"django/core/handlers/base.py:1": 3 * len(part)},
                      loop_thread_cpu_s=0.02)
        (run.workers_dir / f"{pid}.json").write_text(json.dumps({"pid": pid, "http": "h11", "loop": "asyncio"}))
        (run.spans_dir / f"{pid}.jsonl").write_bytes(b"".join(_span_line(pid, r.trace_id) for r in part))
    (run.pyspy_dir / "samples.txt").write_text(STACKS)
    (run.logs_dir / "server.log").write_text(
        "[INFO] Booting worker with pid: 101\n[ERROR] Worker (pid:101) was sent SIGKILL!\n"
        "Traceback (most recent call last):\n  File \"django/db/backends/utils.py\", line 1\n"
        "asyncpg.exceptions.ConnectionDoesNotExistError: connection was closed\n")
    (run.profiles_dir / f"{trace(0)}.pyisession").write_bytes(b"\x00not a session")
    return run


#: Every file kind of a run, by a glob relative to the run directory.
FILE_KINDS = {
    "manifest": MANIFEST,
    "requests": "requests.tsv",
    "records": f"{ACCOUNTING_DIR}/*.tsv",
    "summaries": f"{ACCOUNTING_DIR}/*.json",
    "spans": "spans/*.jsonl",
    "stacks": "pyspy/samples.txt",
    "profiles": "profiles/*.pyisession",
    "workers": "workers/*.json",
    "server_log": "logs/server.log",
}


@pytest.fixture(scope="module")
def pristine() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield full_run(Path(tmp)).path


def _copy(pristine: Path, parent: Path) -> Path:
    path = parent / pristine.name
    shutil.copytree(pristine, path)
    return path


def report_or_error(path: Path) -> dict[str, Any] | AsyncprofError:
    """What ``asyncprof report RUN --json`` computes: the report (rendered to JSON), or asyncprof's error."""
    try:
        report = build_report(Run.load(path))
    except AsyncprofError as exc:
        return exc
    orjson.loads(render_report("json", report))  # the rendered report is JSON
    return report


def _warnings(report: dict[str, Any]) -> str:
    assert all(isinstance(w, str) for w in report["warnings"])
    return "\n".join(report["warnings"])


def test_pristine_run_reports_without_damage_warnings(pristine: Path) -> None:
    report = report_or_error(pristine)
    assert isinstance(report, dict)
    assert report["requests"] == len(REQUESTS)
    assert "damaged" not in _warnings(report) and "unreadable" not in _warnings(report)


@pytest.mark.parametrize("kind", [k for k in FILE_KINDS if k != "manifest"])
def test_each_file_kind_deleted_gives_a_report(pristine: Path, tmp_path: Path, kind: str) -> None:
    path = _copy(pristine, tmp_path)
    for f in path.glob(FILE_KINDS[kind]):
        f.unlink()
    report = report_or_error(path)
    assert isinstance(report, dict), report
    if kind in ("requests", "records", "stacks", "spans"):
        assert report["warnings"], f"deleting {kind} gave no warning"


@pytest.mark.parametrize("kind", sorted(FILE_KINDS))
def test_each_file_kind_unreadable_gives_a_report_or_one_line(pristine: Path, tmp_path: Path, kind: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A file that cannot be read at all (here: a directory in its place) is skipped with a warning, or,
    for the manifest and the request log every figure is counted from, one line and an exit code."""
    path = _copy(pristine, tmp_path)
    for f in path.glob(FILE_KINDS[kind]):
        f.unlink()
        f.mkdir()
    outcome = report_or_error(path)
    if kind in ("manifest", "requests"):
        assert isinstance(outcome, CorruptRunError)
        assert "cannot read" in str(outcome) or "damaged" in str(outcome)
        _assert_one_line_error(capsys, path)
    else:
        assert isinstance(outcome, dict), outcome


@pytest.mark.parametrize(("kind", "named"), [("requests", "requests.tsv"), ("records", f"{ACCOUNTING_DIR}/*.tsv"),
                                             ("spans", "spans/*.jsonl"), ("stacks", "pyspy/samples.txt")])
def test_torn_last_line_is_a_warning_naming_the_file(pristine: Path, tmp_path: Path, kind: str, named: str) -> None:
    path = _copy(pristine, tmp_path)
    for f in path.glob(FILE_KINDS[kind]):
        data = f.read_bytes()
        f.write_bytes(data[: len(data) - 5])
    report = report_or_error(path)
    assert isinstance(report, dict)
    assert f"damaged lines in {named} were skipped" in _warnings(report)


def test_corrupt_worker_summary_is_a_warning_naming_it(pristine: Path, tmp_path: Path) -> None:
    path = _copy(pristine, tmp_path)
    (path / ACCOUNTING_DIR / "101.json").write_bytes(b"{\"pid\": 101, \"requ")
    report = report_or_error(path)
    assert isinstance(report, dict)
    assert "worker summary 101.json is unreadable" in _warnings(report)


def test_missing_manifest_is_one_line_and_an_exit_code(pristine: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _copy(pristine, tmp_path)
    (path / MANIFEST).unlink()
    assert isinstance(report_or_error(path), CorruptRunError)
    _assert_one_line_error(capsys, path)


@pytest.mark.parametrize("garbage", [b"", b"\xff\xfe\x00garbage", b"{\"run_id\": ", b"[1, 2]", b"null", b"\"text\"",
                                     b"{\"config\": [1], \"status\": \"complete\"}",
                                     b"{\"instruments\": {\"pyspy\": 3}}",
                                     b"{\"window\": {\"start_unix\": \"soon\", \"end_unix\": 1010}}"])
def test_garbage_manifest_is_one_line_or_a_report(pristine: Path, tmp_path: Path, garbage: bytes,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = _copy(pristine, tmp_path)
    (path / MANIFEST).write_bytes(garbage)
    outcome = report_or_error(path)
    if isinstance(outcome, AsyncprofError):
        _assert_one_line_error(capsys, path)


def _assert_one_line_error(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    """``asyncprof report PATH --json`` exits non-zero with one ``error:`` line on stderr (no traceback)."""
    capsys.readouterr()
    code = main(["report", str(path), "--json"])
    captured = capsys.readouterr()
    assert code not in (0, 70), captured.err
    assert "Traceback" not in captured.err and "internal error" not in captured.err
    assert captured.err.startswith("error:"), captured.err
    assert captured.out == ""


DAMAGE = settings(max_examples=60, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@DAMAGE
@given(kind=st.sampled_from(sorted(FILE_KINDS)), cut=st.floats(0, 1))
def test_truncated_file_gives_a_report_or_one_line(pristine: Path, kind: str, cut: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _copy(pristine, Path(tmp))
        for f in path.glob(FILE_KINDS[kind]):
            data = f.read_bytes()
            f.write_bytes(data[: int(len(data) * cut)])
        outcome = report_or_error(path)
        if kind == "manifest" and cut < 1:
            assert isinstance(outcome, CorruptRunError)
        else:
            assert isinstance(outcome, dict), outcome


_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 66), 2 ** 66), st.floats(allow_nan=False,
              allow_infinity=False), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


@DAMAGE
@given(data=st.data())
def test_wrong_typed_manifest_fields_give_a_report_or_one_line(pristine: Path, data: st.DataObject) -> None:
    manifest = json.loads((pristine / MANIFEST).read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from([p for p in _paths(manifest) if p]))
        node = manifest
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = data.draw(_VALUES)
    with tempfile.TemporaryDirectory() as tmp:
        path = _copy(pristine, Path(tmp))
        (path / MANIFEST).write_text(json.dumps(manifest))
        report_or_error(path)


@pytest.mark.parametrize("kind", sorted(FILE_KINDS))
@pytest.mark.parametrize("damage", ["deleted", "torn", "garbage"])
def test_other_commands_on_a_damaged_run_never_crash(pristine: Path, tmp_path: Path, kind: str, damage: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``compare``, ``flamegraph`` and ``export`` read the same files: their output, or one error line."""
    other = _copy(pristine, tmp_path / "other")
    path = _copy(pristine, tmp_path)
    for f in path.glob(FILE_KINDS[kind]):
        if damage == "deleted":
            f.unlink()
        elif damage == "torn":
            f.write_bytes(f.read_bytes()[:-7])
        else:
            f.write_bytes(b"\xff\x00{garbage\tline;\n" * 3)
    for argv in (["compare", str(path), str(other), "--json"],
                 ["flamegraph", str(path), "-o", str(tmp_path / "flame.svg")],
                 ["export", "jaeger", str(path), "-o", str(tmp_path / "traces.json")],
                 ["export", "otlp", str(path), "-o", str(tmp_path / "traces.jsonl")]):
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 70 and "Traceback" not in err and "internal error" not in err, (argv, err)
        if code != 0:
            assert err.startswith("error:"), (argv, err)
