"""The load generator's models and scale: open loop at a fixed rate, Locust distributed, CPU pinning."""

import json
from pathlib import Path

import pytest

from asyncprof.processes import free_port
from tests.integration.helpers import alive, asyncprof, manifest, only_run, report_json, started_pids

pytestmark = pytest.mark.integration

QUIET = ["--no-pyspy", "--no-otel", "--no-pyinstrument", "--workers", "2"]


def test_open_loop_holds_the_rate_below_saturation(traces: Path, service_url: str) -> None:
    rate = 80.0
    proc = asyncprof("record", "--mode", "sync", "--rate", f"{rate:g}", "--duration", "5", "--warmup", "1.5",
                     *QUIET, "--db", service_url, "--out", str(traces))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = only_run(traces)
    report = report_json(run)
    load = report["load"]
    assert load["model"] == "open" and load["offered_rps"] == rate
    # The bar: within 5% of the requested arrival rate when the target is not saturated.
    for key in ("scheduled_rps", "sent_rps"):
        assert abs(load[key] - rate) <= 0.05 * rate, (key, load)
    assert abs(report["throughput_rps"] - rate) <= 0.05 * rate, report["throughput_rps"]
    assert report["errors"] == 0
    assert load["lag_ms"]["p50"] < 5.0, load
    # Latency counts from the scheduled time, so it is never below the schedule lag.
    lines = [line.split("\t") for line in (run / "requests.tsv").read_text().splitlines()[1:]]
    assert lines and all(float(f[3]) >= float(f[7]) for f in lines)
    assert "open loop" in asyncprof("report", str(run)).stdout


def test_open_loop_overload_shows_in_latency_not_in_a_thinner_load(traces: Path, service_url: str) -> None:
    # One sync worker behind a 20 ms view cannot serve 100 req/s: a closed loop would slow its
    # users down; the open loop keeps sending, so the backlog shows as latency growing over the run.
    proc = asyncprof("record", "--mode", "sync", "--scenario", "calibrate", "--calibrate", "block_ms=20",
                     "--rate", "100", "--duration", "4", "--warmup", "1", "--workers", "1",
                     "--no-pyspy", "--no-otel", "--no-pyinstrument", "--db", service_url, "--out", str(traces))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = report_json(only_run(traces))
    assert report["load"]["sent_rps"] >= 90, report["load"]
    assert report["throughput_rps"] <= 55, report["throughput_rps"]  # at most 50/s served
    assert report["latency_ms"]["p99"] >= 1000, report["latency_ms"]


def test_distributed_and_pinned_load(traces: Path, service_url: str) -> None:
    proc = asyncprof("record", "--mode", "async", "--users", "10", "--load-processes", "2", "--pin", "--duration",
                     "4", "--warmup", "1.5", *QUIET, "--db", service_url, "--out", str(traces))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = only_run(traces)
    m = manifest(run)
    assert m["load"]["processes"] == 2 and m["load"]["distributed"] is True
    assert len(m["pids"]["locust_workers"]) == 2
    assert m["pinning"]["load"] and m["pinning"]["target"]
    assert not set(m["pinning"]["load"]) & set(m["pinning"]["target"])
    load_cpu = m["cpu_window"]["load_cpu_s"]
    assert set(load_cpu) == {"locust", "locust:1", "locust:2"}
    assert all(load_cpu[k] and load_cpu[k] > 0 for k in ("locust:1", "locust:2")), load_cpu  # both sent load
    report = report_json(run)
    assert report["errors"] == 0 and report["requests"] > 50
    assert report["load"]["processes"] == 2
    for pid in started_pids(m):
        assert not alive(pid), pid


def test_sweep_over_arrival_rates(traces: Path, service_url: str) -> None:
    proc = asyncprof("sweep", "--modes", "sync,async", "--rate", "20,40", "--users", "20", "--trials", "1",
                     "--duration", "2", "--warmup", "0.5", "--workers", "1", "--db", service_url,
                     "--out", str(traces), "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["axis"] == "rate"
    assert sorted((p["mode"], p["rate"]) for p in result["points"]) == [
        (m, r) for m in ("async", "sync") for r in (20.0, 40.0)]
    for p in result["points"]:
        assert abs(p["throughput_rps"]["median"] - p["rate"]) <= 0.1 * p["rate"], p
    assert set(result["max_rate_within_slo"]) == {"sync", "async"}


def test_a_remote_worker_joins_with_the_printed_command(traces: Path, service_url: str) -> None:
    # "Another machine" is a second loopback address: the worker reaches the master only through
    # the printed command and the master's address, and sends its log lines over Locust's messages.
    import os
    import signal
    import subprocess
    import sys
    import time

    port = free_port("127.0.0.2")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    rec = subprocess.Popen(
        [sys.executable, "-m", "asyncprof", "record", "--mode", "sync", "--duration", "4", "--warmup", "1.5",
         "--users", "6", *QUIET, "--load-remote-workers", "1", "--load-master-bind", "127.0.0.2",
         "--load-master-port", str(port), "--db", service_url, "--out", str(traces)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    remote = None
    try:
        command = None
        deadline = time.monotonic() + 60
        assert rec.stderr is not None
        while command is None and time.monotonic() < deadline:
            line = rec.stderr.readline()
            if "on each machine run:" in line:
                command = rec.stderr.readline().strip()
        assert command and "--master-host 127.0.0.2" in command and f"--master-port {port}" in command, command
        remote = subprocess.Popen(command, shell=True, cwd="/", env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        out, err = rec.communicate(timeout=180)
        assert rec.returncode == 0, err[-2000:]
    finally:
        # asyncprof stops what it started on SIGINT; the "remote" worker is this test's to stop.
        if rec.poll() is None:
            rec.send_signal(signal.SIGINT)
            rec.wait(60)
        if remote is not None and remote.poll() is None:
            os.killpg(remote.pid, signal.SIGKILL)
            remote.wait(10)
    assert remote is not None and remote.wait(30) == 0
    run = only_run(traces)
    m = manifest(run)
    assert m["load"]["remote_workers"] == 1 and m["load"]["distributed"] is True
    report = report_json(run)
    # The master runs only once both workers joined (--expect-workers 2), and the log came through it.
    assert report["errors"] == 0 and report["requests"] > 50
