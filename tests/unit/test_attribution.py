"""The per-request breakdown: records joined to client requests, categories that add up, damaged lines."""

import math
from pathlib import Path

import pytest

from asyncprof.analysis import records as records_module
from asyncprof.analysis.attribution import ATTRIBUTION_CATEGORIES, attribute, iter_breakdowns, request_breakdown
from asyncprof.analysis.records import read_records, read_worker_summaries
from asyncprof.analysis.requests import read_request_log
from asyncprof.analysis.summary import measured_window
from asyncprof.run import Run
from asyncprof.worker.record_format import ACCOUNTING_DIR, COLUMNS, SERVER_CATEGORIES
from tests.unit.synthetic import Req, make_run, trace, write_records, write_requests, write_summary


def _join(run: Run):  # type: ignore[no-untyped-def]
    full = read_request_log(run.requests_path)
    log = full.window(*measured_window(run, full))
    joined = read_records(run.path / ACCOUNTING_DIR, log.trace_id, log.name)
    return log, joined


def _us(**kw: int) -> dict[str, int]:
    out = {c: 0 for c in COLUMNS if c not in ("trace_id", "start_unix", "name")}
    out.update(kw)
    return out


def test_one_request_breakdown_is_exact_and_signed() -> None:
    record = _us(wall_us=30_000, cpu_us=10_000, db_wait_us=12_000, event_loop_us=9_500, thread_hop_us=1_000)
    b = request_breakdown(29.0, record)  # the client saw less than the server's wall: clocks differ
    assert b["cpu"] == 10.0 and b["db_wait"] == 12.0 and b["event_loop"] == 9.5
    assert b["server_queue"] == pytest.approx(-1.0)
    assert b["other"] == pytest.approx(-2.5)  # categories beyond wall: negative, not hidden
    assert math.fsum(b.values()) == pytest.approx(29.0, abs=1e-9)
    assert set(b) == set(ATTRIBUTION_CATEGORIES)


def test_every_request_sums_to_its_client_latency(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    reqs = [
        Req(trace(i), latency_ms=10 + i * 1.37, us={
            "wall_us": 8_000 + i * 1_000, "cpu_us": 1_000 + i * 17, "db_wait_us": 2_000, "db_connect_us": i * 10,
            "event_loop_us": 500 * i, "thread_hop_us": 300, "gil_wait_us": 20, "os_run_queue_us": 7 * i,
            "blocking_us": 100, "hops": 2, "queries": 1})
        for i in range(1, 40)
    ]
    write_requests(run, reqs)
    write_records(run, 11, reqs)
    log, joined = _join(run)
    seen = 0
    for client, breakdown in iter_breakdowns(log, joined):
        assert math.fsum(breakdown.values()) == pytest.approx(log.latency_ms[client], abs=1e-9)
        seen += 1
    assert seen == len(reqs)
    # The means add up to the mean latency as well.
    att = attribute(log, joined)
    assert math.fsum(att.overall.breakdown().values()) == pytest.approx(
        sum(r.latency_ms for r in reqs) / len(reqs), abs=6e-4)  # the rounding of the mean, no more


def test_means_per_request_and_per_endpoint(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    a = [Req(trace(i), 20.0, name="/a", us={"wall_us": 15_000, "cpu_us": 4_000, "db_wait_us": 6_000,
                                               "hops": 3, "queries": 2}) for i in range(1, 5)]
    b = [Req(trace(i), 50.0, name="/b", us={"wall_us": 40_000, "cpu_us": 10_000, "event_loop_us": 20_000,
                                               "queries": 1}) for i in range(5, 7)]
    write_requests(run, a + b)
    write_records(run, 11, a[:2] + b)
    write_records(run, 12, a[2:])
    log, joined = _join(run)
    att = attribute(log, joined)
    ep_a, ep_b = att.endpoint_json("/a"), att.endpoint_json("/b")
    assert ep_a["attribution_ms"] == {**dict.fromkeys(ATTRIBUTION_CATEGORIES, 0.0),
                                      "cpu": 4.0, "db_wait": 6.0, "server_queue": 5.0, "other": 5.0}
    assert ep_a["hops_per_request"] == 3.0 and ep_a["queries_per_request"] == 2.0 and ep_a["matched_requests"] == 4
    assert ep_b["attribution_ms"]["event_loop"] == 20.0 and ep_b["attribution_ms"]["server_queue"] == 10.0
    overall = att.overall.breakdown()
    assert overall["cpu"] == pytest.approx((4 * 4 + 2 * 10) / 6, abs=1e-3)
    assert overall["server_queue"] == pytest.approx((4 * 5 + 2 * 10) / 6, abs=1e-3)
    assert att.overall.per_request(att.overall.hops) == 2.0
    assert att.endpoint_json("/none")["attribution_ms"] is None


def test_p99_is_the_mean_of_the_slowest_one_percent(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    # 300 requests: the slowest 1% is 3 requests, marked by their cpu.
    reqs = [Req(trace(i), 10.0 + (i % 50) * 0.1, name=f"/e{i % 3}", us={"wall_us": 9_000, "cpu_us": 1_000})
            for i in range(1, 298)]
    slow = [Req(trace(1000 + i), 500.0 + i, name=f"/e{i}", us={"wall_us": 400_000, "cpu_us": 100_000 * (i + 1)})
            for i in range(3)]
    write_requests(run, reqs + slow)
    write_records(run, 11, reqs + slow)
    log, joined = _join(run)
    att = attribute(log, joined)
    assert att.slowest.requests == 3
    p99 = att.slowest.breakdown()
    assert p99["cpu"] == pytest.approx(200.0)  # (100 + 200 + 300) / 3
    assert p99["server_queue"] == pytest.approx(501.0 - 400.0)
    assert math.fsum(p99.values()) == pytest.approx(501.0, abs=1e-3)


def test_p99_ties_take_exactly_one_percent(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    reqs = [Req(trace(i), 10.0, us={"wall_us": 9_000, "cpu_us": i}) for i in range(1, 201)]
    write_requests(run, reqs)
    write_records(run, 11, reqs)
    att = attribute(*_join(run))
    assert att.slowest.requests == 2  # ceil(200 * 1%), not all 200 tied requests


def test_damaged_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    reqs = [Req(trace(i), 10.0, us={"wall_us": 8_000, "cpu_us": 3_000}) for i in range(1, 11)]
    write_requests(run, reqs, extra_lines=["garbage line"])
    good = reqs[0].record_line()
    fields = good.split("\t")

    def variant(i: int, **change: str) -> str:
        f = list(fields)
        f[0] = trace(100 + i)
        for col, value in change.items():
            f[COLUMNS.index(col)] = value
        return "\t".join(f)

    damaged = [
        "\t".join(fields[:7]),  # too few fields
        good + "\t1",  # too many
        variant(1, cpu_us="12x"),  # not a number
        variant(2, cpu_us="-5"),  # negative
        variant(3, cpu_us=""),  # empty field
        variant(4, cpu_us="1.5"),  # float
        variant(5, cpu_us="1,5"),  # a comma would shift the columns
        variant(6, cpu_us="99999999999999999999999"),  # beyond 64 bits
        variant(7, cpu_us="true"),  # JSON would read it as 1
        variant(8, cpu_us=" 5"),  # JSON would skip the space
        "",  # a blank line is not a record and not damage
    ]
    path = write_records(run, 11, reqs[1:], extra_lines=damaged)
    with open(path, "a") as f:
        f.write(reqs[0].record_line()[:25])  # a torn last line: the worker was killed mid-write
    log, joined = _join(run)
    assert joined.skipped_lines == 11
    assert joined.records == 9 and joined.matched == 9
    att = attribute(log, joined)
    assert att.accounting_json()["unmatched_requests"] == 1
    assert att.overall.breakdown()["cpu"] == 3.0
    assert log.skipped == 1


def test_damage_in_one_chunk_leaves_the_others_fast_and_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "_CHUNK_LINES", 7)
    run = make_run(tmp_path)
    reqs = [Req(trace(i), 10.0, us={"wall_us": 8_000, "cpu_us": i, "hops": 1}) for i in range(1, 51)]
    write_requests(run, reqs)
    lines = [r.record_line() for r in reqs]
    lines[20] = lines[20].replace("\t8000\t", "\t8000x\t")
    lines[33] = lines[33].replace("\t8000\t", "\t008000\t")  # leading zeros: JSON refuses, int() accepts
    (run.path / ACCOUNTING_DIR / "11.tsv").write_text("\t".join(COLUMNS) + "\n" + "\n".join(lines) + "\n")
    log, joined = _join(run)
    assert joined.skipped_lines == 1 and joined.matched == 49 and joined.records == 49
    (group,) = joined.groups.values()
    by_client = dict(zip(group.client_index, group.columns["cpu_us"]))
    assert by_client == {i - 1: i for i in range(1, 51) if i != 21}
    assert sum(group.columns["wall_us"]) == 49 * 8_000


def test_window_unmatched_empty_and_repeated_trace_ids(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    us = {"wall_us": 5_000, "cpu_us": 1_000}
    inside = [Req(trace(i), 6.0, us=us) for i in range(1, 5)]
    warmup = [Req(trace(50), 6.0, start=995.0, us=us)]  # before the window: its record joins nothing
    no_record = [Req(trace(60), 6.0, record=False)]
    no_trace = [Req("", 6.0, us=us)]
    write_requests(run, inside + warmup + no_record + no_trace)
    write_records(run, 11, inside + warmup + no_trace + inside[:1])  # inside[0] written twice
    log, joined = _join(run)
    att = attribute(log, joined)
    acc = att.accounting_json()
    assert acc["records"] == 7
    assert acc["matched_requests"] == 4
    assert acc["unmatched_requests"] == 2  # no_record and no_trace
    assert acc["match_rate"] == round(4 / 6, 4)
    assert acc["wall_ms"] == 5.0


def test_header_decides_the_columns(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    write_requests(run, [Req(trace(1), 10.0)])
    numeric = [c for c in COLUMNS[3:] if c != "pool_wait_us"][::-1]  # reordered, one column missing
    values = {"wall_us": "9000", "cpu_us": "2000", "db_wait_us": "3000", "hops": "4"}
    line = "\t".join([trace(1), "1001.0", "/items/", *(values.get(c, "0") for c in numeric)])
    (run.path / ACCOUNTING_DIR / "11.tsv").write_text("\t".join([*COLUMNS[:3], *numeric]) + "\n" + line + "\n")
    log, joined = _join(run)
    assert any("pool_wait_us" in w for w in joined.warnings)
    (breakdown,) = [b for _, b in iter_breakdowns(log, joined)]
    assert breakdown["cpu"] == 2.0 and breakdown["db_wait"] == 3.0 and breakdown["other"] == 4.0
    assert attribute(log, joined).overall.hops == 4


def test_a_file_without_header_is_read_as_todays_format(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    reqs = [Req(trace(1), 10.0, us={"wall_us": 9_000, "cpu_us": 2_000})]
    write_requests(run, reqs)
    write_records(run, 11, reqs, header=False)
    _, joined = _join(run)
    assert joined.matched == 1 and joined.skipped_lines == 0


def test_no_accounting_directory_is_empty(tmp_path: Path) -> None:
    joined = read_records(tmp_path / "nope", ["a"], ["/"])
    assert joined.files == joined.records == joined.matched == 0
    assert read_worker_summaries(tmp_path / "nope").workers == []


def test_worker_summaries_combine_and_degrade(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    write_summary(run, 11, requests=100, hop_sites={"Signal.send": 200, "SessionMiddleware.process_request": 100},
                  loop_thread_cpu_s=1.5, steps_cpu_s=1.0, hook_cost_us_per_request=10.0)
    write_summary(run, 12, requests=300, hop_sites={"Signal.send": 600}, loop_thread_cpu_s=2.5,
                  hook_cost_us_per_request=20.0, loop="uvloop")
    (run.path / ACCOUNTING_DIR / "13.json").write_text("{torn")
    (run.path / ACCOUNTING_DIR / "14.json").write_text("[1, 2]")
    write_records(run, 15, [])  # records but no summary: killed before exit
    s = read_worker_summaries(run.path / ACCOUNTING_DIR)
    assert len(s.workers) == 2 and s.requests == 400
    assert s.hop_sites == {"Signal.send": 800, "SessionMiddleware.process_request": 100}
    assert s.loop_thread_cpu_s == 4.0 and s.steps_cpu_s == 1.0
    assert s.hook_cost_us_per_request == pytest.approx((10 * 100 + 20 * 300) / 400)
    assert s.interface == "asgi" and s.loop == "mixed"
    assert s.missing_pids == ["15"]
    assert len(s.warnings) == 3  # unreadable, not an object, missing summary
    assert list(s.to_json()["hop_sites"]) == ["Signal.send", "SessionMiddleware.process_request"]


def test_server_categories_come_from_the_format_module() -> None:
    assert ATTRIBUTION_CATEGORIES[: len(SERVER_CATEGORIES)] == SERVER_CATEGORIES
    assert ATTRIBUTION_CATEGORIES[-2:] == ("server_queue", "other")
