from pathlib import Path

from asyncprof.analysis.requests import read_request_log
from asyncprof.loadgen.locustfile import REQUEST_LOG_HEADER


def test_reads_columns_skips_damage_and_cuts_the_window(tmp_path: Path) -> None:
    path = tmp_path / "requests.tsv"
    path.write_text(
        REQUEST_LOG_HEADER
        + "100.0\ta\t200\t10.5\t99\tt1\t\n"
        + "101.0\ta\t500\t20.0\t10\tt2\tHTTPError(500)\n"
        + "not\ta\tnumber\n"
        + "102.0\tb\t0\t1000.0\t0\tt3\tConnectionRefused\n"
        + "103.0\tb\t200\t5.0\t99\tt4\t\n"
    )
    log = read_request_log(path)
    assert len(log) == 4 and log.skipped == 1
    assert [log.is_error(i) for i in range(4)] == [False, True, True, False]
    window = log.window(101.0, 103.0)
    assert window.trace_id == ["t2", "t3"]
    assert window.latency_ms == [20.0, 1000.0]


def test_missing_log_is_empty(tmp_path: Path) -> None:
    assert len(read_request_log(tmp_path / "nope.tsv")) == 0
