import pytest

from asyncprof.config import RecordConfig
from asyncprof.errors import UsageError
from asyncprof.modes import MODES, ServerSpec, get_mode
from asyncprof.scenarios import get_scenario


def test_unknown_mode_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as err:
        get_mode("turbo")
    assert "turbo" in str(err.value)
    for name in MODES:
        assert name in err.value.hint


def test_unknown_scenario_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="known scenarios"):
        get_scenario("nope")


@pytest.mark.parametrize(
    "field,value",
    [("workers", 0), ("users", -1), ("duration", 0), ("warmup", -5), ("rows", 0), ("connect", "sometimes"),
     ("port", 70000), ("profile_every", 0)],
)
def test_bad_values_are_rejected(field: str, value: object) -> None:
    with pytest.raises(UsageError):
        RecordConfig(**{field: value}).validate()


def test_view_defaults_to_the_modes_interface() -> None:
    assert RecordConfig(mode="sync").validate().view == "sync"
    assert RecordConfig(mode="async").validate().view == "async"


def test_modes_bind_where_told_and_serve_the_right_interface() -> None:
    spec = ServerSpec(host="127.0.0.1", port=8123, workers=3)
    sync_cmd = get_mode("sync").command(spec)
    async_cmd = get_mode("async").command(spec)
    assert "127.0.0.1:8123" in sync_cmd and "3" in sync_cmd
    assert sync_cmd[-1].startswith("asyncprof.worker.wsgi:")
    assert async_cmd[-1].startswith("asyncprof.worker.asgi:")
    assert "uvicorn_worker.UvicornWorker" in async_cmd


def test_manifest_config_holds_no_database_url() -> None:
    cfg = RecordConfig(db="postgresql://u:secret@db/x").validate()
    assert "secret" not in str(cfg.to_manifest())
