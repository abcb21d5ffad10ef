"""Instruments failing during ``asyncprof record`` (issue 7): the fault is injected for real, and the run
goes on or ends cleanly, with what failed said in one line on stderr and in the manifest.

* py-spy that cannot attach (a py-spy next to the interpreter that fails as a ptrace refusal does);
* Locust killed with SIGKILL in the middle of the measured window;
* an OTLP endpoint nobody listens on;
* the disk holding the run directory filling up (a 2 MiB tmpfs; root only).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import alive, manifest, only_run, report_json, started_pids

pytestmark = pytest.mark.integration

QUICK = ["--mode", "async", "--duration", "6", "--warmup", "1", "--workers", "2", "--users", "5",
         "--profile-every", "20"]  # fmt: skip


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",) and not k.startswith("OTEL_")}


def _record(traces: Path, *args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-m", "asyncprof", "record", "--out", str(traces), *QUICK, *args],
                          capture_output=True, text=True, timeout=150, env=_env())


def _problem_lines(stderr: str, *words: str) -> list[str]:
    """The stderr lines (rich may wrap one message over several: rejoined) that mention all *words*."""
    text = " ".join(stderr.split())
    return [m for m in text.replace("warning: ", "\n").replace("error: ", "\n").splitlines()
            if all(w in m for w in words)]


def _nothing_left(m: dict[str, Any]) -> None:
    pids = started_pids(m)
    assert pids, m.get("pids")
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)]


def test_pyspy_that_cannot_attach_leaves_a_run_without_cpu_profile(traces: Path, tmp_path: Path) -> None:
    # asyncprof runs the py-spy next to its interpreter: a virtual environment sharing this one's packages,
    # whose py-spy fails the way a refused ptrace does.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    site_dir = next(env_dir.glob("lib/python*/site-packages"))
    (site_dir / "zz_shared.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    fake = env_dir / "bin" / "py-spy"
    fake.write_text("#!/bin/sh\necho 'Error: Failed to attach to process: Permission denied (os error 13)' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)

    proc = _record(traces, python=str(env_dir / "bin" / "python"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    said = _problem_lines(proc.stderr, "py-spy could not attach", "Permission denied")
    assert len(said) == 1, proc.stderr
    run = only_run(traces)
    m = manifest(run)
    assert m["status"] == "complete"
    pyspy = m["instruments"]["pyspy"]
    assert pyspy["status"] == "failed" and "Permission denied" in pyspy["error"]
    assert pyspy["produced"]["samples_file"] is False
    r = report_json(run)
    assert r["requests"] > 0 and r["throughput_rps"] > 0
    assert r["cpu_profile"] is None and r["instruments"]["pyspy"]["samples"] == 0
    assert any("no samples" in w and "Permission denied" in w for w in r["warnings"]), r["warnings"]
    _nothing_left(m)


def test_locust_killed_mid_run_ends_the_run_cleanly(traces: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "asyncprof", "record", "--out", str(traces), *QUICK],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 60
        m: dict[str, Any] = {}
        while time.monotonic() < deadline:
            runs = [p for p in traces.iterdir() if (p / "manifest.json").exists()]
            with contextlib.suppress(ValueError, OSError):
                m = manifest(runs[0]) if runs else {}
            if "window" in m and "locust" in m.get("pids", {}):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        time.sleep(2)  # some measured requests
        os.kill(m["pids"]["locust"], signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err[-3000:]
    assert "Traceback" not in err
    said = _problem_lines(err, "load generator exited with signal SIGKILL")
    assert len(said) == 1, err
    run = only_run(traces)
    m = manifest(run)
    assert m["status"] == "failed" and "load generator exited with signal SIGKILL" in m["error"]
    _nothing_left(m)
    # What Locust logged before it died is kept, and the window is cut where the load stopped.
    assert m["window"]["end_unix"] - m["window"]["start_unix"] < 5.5
    r = report_json(run)
    assert r["status"] == "failed" and r["requests"] > 0


def test_unreachable_otlp_endpoint_is_one_warning_and_the_run_is_complete(traces: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    proc = _record(traces, "--otlp", f"http://127.0.0.1:{port}")
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    said = _problem_lines(proc.stderr, "OTLP export to", "failed", "Connection refused")
    assert len(said) == 1, proc.stderr
    assert "client spans were not sent" in said[0]
    # The workers drop batches at once instead of retrying them: their exit (and the run) is not held up.
    assert took < 45
    run = only_run(traces)
    m = manifest(run)
    assert m["status"] == "complete"
    export = m["instruments"]["otel"]["otlp_export"]
    assert export["status"] == "failed" and "Connection refused" in export["reason"]
    assert export["client_spans_sent"] == 0 and export["worker_spans_sent"] == 0
    assert any("OTLP export to" in w for w in m["warnings"])
    # The run's own span files are complete: every span the workers ended is in spans/.
    counts = [w["spans"] for w in m["workers"] if "spans" in w]
    assert len(counts) == len(m["pids"]["workers"])
    # Which worker accepts the connections is the kernel's choice: one of them may serve none.
    assert all(c["written"] == c["ended"] and c["write_failed"] == 0 for c in counts), counts
    assert sum(c["ended"] for c in counts) > 0, counts
    assert export["worker_spans_dropped"] == sum(c["ended"] for c in counts)
    lines = sum(1 for f in (run / "spans").glob("*.jsonl") for line in f.read_text().splitlines()
                if json.loads(line))
    assert lines > 0
    r = report_json(run)
    assert r["requests"] > 0
    assert r["instruments"]["otel"]["match_rate"] >= 0.99
    _nothing_left(m)


def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True)
    return done.returncode == 0


def test_disk_full_while_recording_fails_in_one_line_and_keeps_the_run(tmp_path: Path) -> None:
    small = tmp_path / "small-disk"
    if not _mount_tmpfs(small, "2m"):
        pytest.skip("needs root and mount -t tmpfs (a 2 MiB file system for the run directory)")
    try:
        proc = _record(small)
        assert proc.returncode == 3, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        said = _problem_lines(proc.stderr, "disk full while writing")
        assert len(said) == 1, proc.stderr
        run = only_run(small)
        m = manifest(run)
        assert m["status"] == "failed" and m["error"].startswith("disk full while writing"), m.get("error")
        _nothing_left(m)
        assert (run / "requests.tsv").stat().st_size > 0
        assert not (run / ".space-reserve").exists()
        r = report_json(run)  # what was written is read, damaged last lines and all
        assert r["status"] == "failed" and r["requests"] > 0
        assert r["warnings"]
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


# --- the pieces, without a recording (fast) ---------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Inner:
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.calls += 1
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def test_live_exporter_drops_batches_at_once_while_the_endpoint_refuses(capfd: pytest.CaptureFixture[str]) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from asyncprof.exporters.otlp_env import RedactingSpanExporter

    inner = _Inner()
    exporter = RedactingSpanExporter(inner, probe_url=f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    assert exporter.export([object()] * 3) is SpanExportResult.FAILURE
    assert exporter.export([object()] * 2) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 1.0 and inner.calls == 0 and exporter.dropped == 5
    said = [ln for ln in capfd.readouterr().err.splitlines() if "unreachable" in ln]
    assert len(said) == 1 and "Connection refused" in said[0]
    with socket.socket() as listener:  # the endpoint comes back: batches go through again
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        exporter.probe_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        assert exporter.export([]) is SpanExportResult.SUCCESS and inner.calls == 1


def test_push_to_a_closed_port_fails_before_any_retry() -> None:
    from asyncprof.exporters.push import ExportFailed, push

    started = time.monotonic()
    with pytest.raises(ExportFailed, match="did not accept spans: Connection refused"):
        push(iter(()), _Inner(), "somewhere", url=f"http://127.0.0.1:{_closed_port()}")
    assert time.monotonic() - started < 1.0


def test_manifest_past_the_file_size_limit_is_one_clear_error(tmp_path: Path) -> None:
    """RLIMIT_FSIZE (``ulimit -f``) makes writes fail with EFBIG, as a full disk fails them with ENOSPC."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from asyncprof.errors import DiskFullError\n"
        "from asyncprof.run import Run\n"
        "run = Run.create(Path(sys.argv[1]), 'x')\n"
        "try:\n"
        "    run.update(big='x' * 100000)\n"
        "except DiskFullError as exc:\n"
        "    print(exc)\n"
    )

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=30,
                          preexec_fn=limit)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("file too large (the file-size limit, ulimit -f) while writing ")
    assert "manifest.json" in proc.stdout
    run = only_run(tmp_path)
    assert manifest(run)["status"] == "running" and "big" not in manifest(run)  # the previous one, whole
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no half-written temporary file
