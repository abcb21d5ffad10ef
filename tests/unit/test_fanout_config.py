"""The fanout scenario's knobs: the registry entry, --upstream-delay-ms, and the workers' environment."""

from pathlib import Path

import pytest

from asyncprof.cli import build_parser
from asyncprof.collectors.upstream import ENV_VAR
from asyncprof.config import RecordConfig
from asyncprof.errors import UsageError
from asyncprof.modes import get_mode
from asyncprof.scenarios import SCENARIOS, get_scenario


def test_only_fanout_needs_the_upstream() -> None:
    fanout = get_scenario("fanout")
    assert fanout.needs_upstream
    assert fanout.endpoints_for("sync") == (("sync/fanout", "/sync/fanout/", 1),)
    assert fanout.endpoints_for("async") == (("async/fanout", "/async/fanout/", 1),)
    assert [s.name for s in SCENARIOS.values() if s.needs_upstream] == ["fanout"]


@pytest.mark.parametrize("delay", [0.0, 20.0, 10_000.0])
def test_upstream_delay_in_range_is_kept(delay: float) -> None:
    config = RecordConfig(scenario="fanout", upstream_delay_ms=delay).validate()
    assert config.to_manifest()["upstream_delay_ms"] == delay


@pytest.mark.parametrize("delay", [-1.0, 10_000.5, float("nan")])
def test_upstream_delay_out_of_range_is_refused(delay: float) -> None:
    with pytest.raises(UsageError, match="--upstream-delay-ms"):
        RecordConfig(scenario="fanout", upstream_delay_ms=delay).validate()


def test_the_cli_takes_the_delay_for_record_and_sweep() -> None:
    parser = build_parser()
    assert parser.parse_args(["record"]).upstream_delay_ms == 20.0
    assert parser.parse_args(["record", "--scenario", "fanout", "--upstream-delay-ms", "35"]).upstream_delay_ms == 35.0
    assert parser.parse_args(["sweep", "--scenario", "fanout", "--upstream-delay-ms", "5"]).upstream_delay_ms == 5.0


def test_workers_get_the_upstream_url_only_when_there_is_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncprof.collectors.server import worker_environment
    from asyncprof.run import Run

    monkeypatch.setenv(ENV_VAR, "http://elsewhere:1")  # never inherited from the user's shell
    run = Run.create(tmp_path, "t")
    kwargs = dict(db_url="postgresql://u@h/db", connect="persistent", pool_size=1, rows=1, otel=False,
                  profile_every=0)
    assert ENV_VAR not in worker_environment(run, get_mode("sync"), **kwargs)
    env = worker_environment(run, get_mode("async"), upstream_url="http://127.0.0.1:5000", **kwargs)
    assert env[ENV_VAR] == "http://127.0.0.1:5000"
