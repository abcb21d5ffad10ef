"""parse_calibration, Calibration.to_env, RecordConfig's --calibrate handling, and the target's own parser."""

import dataclasses
from pathlib import Path

import pytest

from asyncprof.calibration import Calibration, parse_calibration
from asyncprof.config import RecordConfig
from asyncprof.errors import UsageError
from asyncprof.scenarios import get_scenario


def test_full_text() -> None:
    assert parse_calibration("cpu_ms=5,db_ms=10,block_ms=2,hops=2") == Calibration(5.0, 10.0, 2.0, 2)


def test_missing_keys_default_to_zero_and_order_and_spaces_do_not_matter() -> None:
    assert parse_calibration("hops=3") == Calibration(0.0, 0.0, 0.0, 3)
    assert parse_calibration(" db_ms = 1.5 , cpu_ms=0.25 ") == Calibration(0.25, 1.5, 0.0, 0)
    assert parse_calibration("cpu_ms=0,db_ms=0,block_ms=0,hops=0") == Calibration()


def test_limits_are_inclusive() -> None:
    assert parse_calibration("cpu_ms=10000,db_ms=10000,block_ms=10000,hops=1000") == Calibration(
        10000.0, 10000.0, 10000.0, 1000
    )


@pytest.mark.parametrize(
    "text",
    ["cpu_ms=5,db_ms=10,block_ms=2,hops=2", "hops=7", "cpu_ms=0.5,block_ms=1e-3", "db_ms=1234.5678", ""],
)
def test_round_trip(text: str) -> None:
    c = parse_calibration(text) if text else Calibration()
    assert parse_calibration(c.to_env()) == c
    assert c.to_env().split(",")[0].startswith("cpu_ms=")


def test_canonical_text() -> None:
    assert parse_calibration("hops=2,cpu_ms=5.0").to_env() == "cpu_ms=5,db_ms=0,block_ms=0,hops=2"
    assert Calibration(cpu_ms=0.5).to_env() == "cpu_ms=0.5,db_ms=0,block_ms=0,hops=0"
    assert parse_calibration("cpu_ms=-0").to_env() == "cpu_ms=0,db_ms=0,block_ms=0,hops=0"


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("cpu_ms=5,,hops=1", "empty item"),
        ("cpu_ms=5,", "empty item"),
        ("cpu_ms", "not key=value"),
        ("cpu=5", "unknown key 'cpu'"),
        ("CPU_MS=5", "unknown key"),
        ("cpu_ms=five", "not 'five'"),
        ("cpu_ms=", "number"),
        ("cpu_ms=-1", "between 0 and 10,000"),
        ("db_ms=10001", "between 0 and 10,000"),
        ("block_ms=1e9", "between 0 and 10,000"),
        ("cpu_ms=nan", "between"),
        ("cpu_ms=inf", "between"),
        ("hops=1001", "between 0 and 1000"),
        ("hops=-1", "between 0 and 1000"),
        ("hops=1.5", "whole number"),
        ("hops=x", "whole number"),
        ("cpu_ms=1,cpu_ms=2", "more than once"),
    ],
)
def test_bad_input_is_one_usage_error(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_calibration(text)
    message = str(err.value)
    assert needle in message
    assert "\n" not in message
    assert "--calibrate" in message
    assert err.value.exit_code == 2


def test_calibration_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Calibration().cpu_ms = 1  # type: ignore[misc]


def test_scenario_is_registered_for_both_views() -> None:
    scenario = get_scenario("calibrate")
    assert scenario.description
    assert scenario.endpoints_for("sync") == (("sync/calibrate", "/sync/calibrate/", 1),)
    assert scenario.endpoints_for("async") == (("async/calibrate", "/async/calibrate/", 1),)


def test_config_canonicalises_and_records_the_parsed_values() -> None:
    config = RecordConfig(scenario="calibrate", calibrate="hops=2, cpu_ms=5").validate()
    assert config.calibrate == "cpu_ms=5,db_ms=0,block_ms=0,hops=2"
    assert config.validate().calibrate == "cpu_ms=5,db_ms=0,block_ms=0,hops=2"  # idempotent
    assert config.to_manifest()["calibrate"] == {"cpu_ms": 5.0, "db_ms": 0.0, "block_ms": 0.0, "hops": 2}


def test_config_calibrate_scenario_defaults_to_zeros() -> None:
    config = RecordConfig(scenario="calibrate").validate()
    assert config.calibration == Calibration()
    assert config.to_manifest()["calibrate"] == {"cpu_ms": 0.0, "db_ms": 0.0, "block_ms": 0.0, "hops": 0}


def test_config_rejects_calibrate_with_another_scenario() -> None:
    with pytest.raises(UsageError, match="only applies to --scenario calibrate"):
        RecordConfig(scenario="seed", calibrate="cpu_ms=1").validate()
    assert RecordConfig(scenario="seed").validate().to_manifest()["calibrate"] is None


def test_config_rejects_bad_calibrate() -> None:
    with pytest.raises(UsageError, match="cpu_ms must be between"):
        RecordConfig(scenario="calibrate", calibrate="cpu_ms=-1").validate()


def test_worker_environment_sets_or_clears_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncprof.collectors.server import worker_environment
    from asyncprof.modes import get_mode
    from asyncprof.run import Run

    monkeypatch.setenv("ASYNCPROF_CALIBRATE", "stale")
    run = Run.create(tmp_path, "test")
    def env(calibrate: str | None) -> dict[str, str]:
        return worker_environment(run, get_mode("sync"), db_url="postgresql://x@h/d", connect="persistent",
                                  pool_size=1, rows=1, otel=False, profile_every=0, calibrate=calibrate)

    assert env("cpu_ms=1,db_ms=0,block_ms=0,hops=0")["ASYNCPROF_CALIBRATE"] == "cpu_ms=1,db_ms=0,block_ms=0,hops=0"
    assert "ASYNCPROF_CALIBRATE" not in env(None)


def test_the_target_parses_what_asyncprof_writes() -> None:
    pytest.importorskip("django")
    from django.core.exceptions import ImproperlyConfigured

    from asyncprof_target.calibrate import Cost, parse

    for text in ("cpu_ms=5,db_ms=10,block_ms=2,hops=2", "cpu_ms=0.5", "hops=1000"):
        c = parse_calibration(text)
        assert dataclasses.asdict(parse(c.to_env())) == dataclasses.asdict(c)
    assert parse("") == Cost()
    for bad in ("cpu=1", "cpu_ms=-1", "hops=1.5", "cpu_ms=1,cpu_ms=1", "db_ms=x"):
        with pytest.raises(ImproperlyConfigured):
            parse(bad)


def test_burn_cpu_uses_thread_cpu_time() -> None:
    import time

    from asyncprof_target.calibrate import burn_cpu

    before = time.thread_time()
    burn_cpu(20)
    assert time.thread_time() - before >= 0.020
