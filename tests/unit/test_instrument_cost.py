"""The report's ``instrument_cost``: the instruments' own CPU from the run's files."""

import pytest

from asyncprof.analysis.instrument_cost import instrument_cost

MANIFEST = {
    "host": {"cpus_usable": 2},
    "cpu_window": {"seconds": 10.0, "pyspy_cpu_s": 0.4, "workers_cpu_s": {"1": 6.0, "2": 6.0}},
}
INFOS = [
    {"pid": 1, "spans": {"ended": 10, "written": 10, "write_cpu_s": 0.05}, "pyinstrument": {"profiles": 2, "save_cpu_s": 0.01}},
    {"pid": 2, "spans": {"ended": 10, "written": 10, "write_cpu_s": 0.05, "otlp_cpu_s": 0.1}},
]
ACCOUNTING = [
    {"requests": 3000, "hook_cost_us_per_request": 10.0, "record_write_cpu_s": 0.02},
    {"requests": 1000, "hook_cost_us_per_request": 30.0, "record_write_cpu_s": 0.02},
]


def test_every_part_is_summed_and_set_against_the_workers_cpu() -> None:
    cost = instrument_cost(MANIFEST, INFOS, ACCOUNTING, window_requests=3000)
    assert cost["pyspy_cpu_s"] == 0.4 and cost["pyspy_machine_share"] == 0.02  # 0.4 s of 2 CPUs × 10 s
    parts = cost["workers_cpu_s"]
    assert parts == {"hooks_s": pytest.approx(0.06), "record_write_s": pytest.approx(0.04),
                     "span_export_s": pytest.approx(0.2), "profile_save_s": pytest.approx(0.01)}
    assert cost["workers_requests_served"] == 4000
    # 0.31 s over 4000 requests = 77.5 µs; the workers spent 12 s on 3000 window requests = 4000 µs each
    assert cost["workers_us_per_request"] == pytest.approx(77.5)
    assert cost["workers_cpu_share"] == pytest.approx(77.5 / 4000, abs=1e-4)


def test_a_run_without_the_figures_says_none_rather_than_zero() -> None:
    cost = instrument_cost({}, [], [], window_requests=0)
    assert cost["pyspy_cpu_s"] is None and cost["pyspy_machine_share"] is None
    assert set(cost["workers_cpu_s"].values()) == {None}
    assert cost["workers_us_per_request"] is None and cost["workers_cpu_share"] is None


@pytest.mark.parametrize("junk", [None, "x", [], True, float("nan"), {"seconds": "10"}])
def test_damaged_values_are_skipped(junk: object) -> None:
    manifest = {"host": junk, "cpu_window": {"seconds": junk, "pyspy_cpu_s": 0.4, "workers_cpu_s": junk}}
    cost = instrument_cost(manifest, [{"spans": junk, "pyinstrument": junk}],
                           [{"requests": junk, "hook_cost_us_per_request": junk}], window_requests=10)
    assert cost["pyspy_cpu_s"] == 0.4 and cost["pyspy_machine_share"] is None
    assert cost["workers_cpu_share"] is None
