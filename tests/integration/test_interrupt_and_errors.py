"""Ctrl-C, SIGTERM and bad input: one line, a non-zero exit, nothing left running, nothing lost."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.helpers import SHORT, alive, asyncprof, manifest, only_run, report_json, started_pids

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_stops_everything_and_keeps_the_run(sig: int, traces: Path) -> None:
    args = [sys.executable, "-m", "asyncprof", "record", "--mode", "async", "--out", str(traces),
            "--duration", "60", "--warmup", "1", "--users", "10", "--workers", "2", "--profile-every", "5"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            runs = [p for p in traces.iterdir() if (p / "manifest.json").exists()]
            if runs and "window" in manifest(runs[0]):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        time.sleep(2)  # some measured requests
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    run = only_run(traces)
    m = manifest(run)
    assert m["status"] == "interrupted"
    assert not any(alive(pid) for pid in started_pids(m))
    r = report_json(run)
    assert r["status"] == "interrupted"
    assert r["requests"] > 0
    # The workers wrote their accounting as the server shut down: the breakdown survives.
    assert r["attribution_ms"] is not None, r["warnings"]
    assert r["hops_per_request"] > 0


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("recording ")
             and not ln.startswith("traces/") and "/" not in ln[:2]]
    return " ".join(lines)


def test_unknown_mode(traces: Path) -> None:
    proc = asyncprof("record", "--mode", "turbo", "--out", str(traces))
    assert proc.returncode == 2
    assert "unknown mode 'turbo'" in _one_line_error(proc) and "sync" in proc.stderr
    assert not list(traces.iterdir())  # nothing started, nothing written


def test_unreachable_database_fails_cleanly_and_records_why(traces: Path) -> None:
    proc = asyncprof("record", "--db", "postgresql://u:s3cret@127.0.0.1:1/x", "--out", str(traces), *SHORT)
    assert proc.returncode == 2
    text = _one_line_error(proc)
    assert "cannot connect" in text and "s3cret" not in proc.stderr
    m = manifest(only_run(traces))
    assert m["status"] == "failed" and "cannot connect" in m["error"]
    assert "s3cret" not in (only_run(traces) / "manifest.json").read_text()


def test_busy_port(traces: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = asyncprof("record", "--port", str(port), "--out", str(traces), *SHORT)
    assert proc.returncode == 2
    assert "already in use" in _one_line_error(proc)


def test_report_without_runs_and_on_a_corrupt_run(tmp_path: Path) -> None:
    proc = asyncprof("report", "--out", str(tmp_path))
    assert proc.returncode == 2 and "no runs" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "bad-run"
    bad.mkdir()
    (bad / "manifest.json").write_text("{oops")
    proc = asyncprof("report", str(bad))
    assert proc.returncode == 3 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr
