from pathlib import Path

import pytest

from asyncprof.config import RecordConfig
from asyncprof.errors import UsageError
from asyncprof.modes import MODES, ServerSpec, get_mode
from asyncprof.processes import split_cpus
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
    assert "uvicorn_worker.UvicornH11Worker" in async_cmd


def test_manifest_config_holds_no_database_url() -> None:
    cfg = RecordConfig(db="postgresql://u:secret@db/x").validate()
    assert "secret" not in str(cfg.to_manifest())


# --- the worker modes -------------------------------------------------------------------------

NEW_MODES = ("gthread", "gevent", "uvicorn", "hypercorn", "daphne", "granian-asgi", "granian-wsgi")


def test_the_new_modes_are_registered_with_their_interface() -> None:
    wsgi = {"sync", "gthread", "gevent", "granian-wsgi"}
    assert set(NEW_MODES) <= set(MODES)
    for name, mode in MODES.items():
        assert mode.interface == ("wsgi" if name in wsgi else "asgi"), name
        assert mode.default_view == ("sync" if name in wsgi else "async")


@pytest.mark.parametrize("name", sorted(MODES))
def test_every_mode_binds_where_told_and_serves_the_right_app(name: str) -> None:
    mode = get_mode(name)
    spec = ServerSpec(host="127.0.0.1", port=8123, workers=3, threads=mode.default_threads)
    cmd = mode.command(spec)
    text = " ".join(cmd)
    assert "127.0.0.1:8123" in text or ("--host 127.0.0.1" in text and "--port 8123" in text), cmd
    assert "0.0.0.0" not in text
    assert cmd[cmd.index("--workers") + 1] == "3", cmd
    app = "asyncprof.worker.wsgi:application" if mode.interface == "wsgi" else "asyncprof.worker.asgi:application"
    assert app in cmd, cmd
    # gunicorn's hooks announce its workers; every other server's workers announce themselves
    assert (mode.announce == "gunicorn") == ("gunicorn" in cmd), (name, mode.announce)


def test_ipv6_binds_are_bracketed_where_the_server_wants_host_port() -> None:
    spec = ServerSpec(host="::1", port=8123, workers=1, threads=2)
    for name in ("sync", "gthread", "hypercorn", "daphne"):
        assert "[::1]:8123" in get_mode(name).command(spec), name
    assert "::1" in get_mode("uvicorn").command(spec)


def test_threads_reach_the_server_and_the_manifest() -> None:
    cfg = RecordConfig(mode="gthread").validate()
    assert cfg.threads == 4 and cfg.to_manifest()["threads"] == 4
    cfg = RecordConfig(mode="gthread", threads=8).validate()
    cmd = get_mode("gthread").command(ServerSpec("127.0.0.1", 1, 2, threads=cfg.threads))
    assert cmd[cmd.index("--threads") + 1] == "8" and cmd[cmd.index("--worker-class") + 1] == "gthread"
    cmd = get_mode("granian-wsgi").command(ServerSpec("127.0.0.1", 1, 2, threads=3))
    assert cmd[cmd.index("--blocking-threads") + 1] == "3"
    # sync workers never get --threads: gunicorn would silently turn them into gthread workers
    assert "--threads" not in get_mode("sync").command(ServerSpec("127.0.0.1", 1, 2, threads=8))
    assert RecordConfig(mode="sync").validate().threads is None


@pytest.mark.parametrize("mode,threads", [("sync", 4), ("async", 2), ("uvicorn", 4), ("gthread", 0)])
def test_threads_are_refused_where_they_do_not_apply(mode: str, threads: int) -> None:
    with pytest.raises(UsageError, match="threads"):
        RecordConfig(mode=mode, threads=threads).validate()


def test_a_missing_server_names_the_extra_to_install() -> None:
    from asyncprof.modes import Mode

    mode = Mode("x", "asgi", "test", command=lambda spec: [], requires=("asyncprof_no_such_server",),
                extra="hypercorn")
    with pytest.raises(UsageError) as err:
        mode.check_installed()
    assert "asyncprof_no_such_server" in str(err.value)
    assert "pip install 'asyncprof[hypercorn]'" in err.value.hint


def test_every_optional_server_has_its_extra_and_all_installs_them() -> None:
    import re
    import tomllib

    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    named = {m.extra for m in MODES.values() if m.extra}
    assert named == {"gevent", "hypercorn", "daphne", "granian"}
    assert named <= set(extras)
    everything = set(re.findall(r"\[(.*)\]", extras["all"][0])[0].split(","))
    assert named | {"uvicorn"} <= everything
    for mode in MODES.values():  # what a mode needs is what its extra (or the core) installs
        if mode.extra:
            assert any(req.split(">")[0].split("=")[0] in mode.requires for req in extras[mode.extra]), mode.name


def test_worker_environment_carries_the_modes_announcement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncprof.collectors.server import worker_environment
    from asyncprof.run import Run
    from asyncprof.worker import env as worker_env

    monkeypatch.setenv(worker_env.IGNORE_SIGTERM, "1")  # never inherited from the user's shell
    run = Run.create(tmp_path, "t")
    kwargs = dict(db_url="postgresql://u:pw@h/db", connect="persistent", pool_size=1, rows=1, otel=False,
                  profile_every=0)
    env = worker_environment(run, get_mode("sync"), **kwargs)
    assert env[worker_env.ANNOUNCE] == "gunicorn" and worker_env.IGNORE_SIGTERM not in env
    env = worker_environment(run, get_mode("uvicorn"), **kwargs)
    assert env[worker_env.ANNOUNCE] == "lifespan"
    env = worker_environment(run, get_mode("hypercorn"), **kwargs)
    assert env[worker_env.IGNORE_SIGTERM] == "1"
    assert worker_environment(run, get_mode("daphne"), **kwargs)[worker_env.ANNOUNCE] == "import"


# --- load generator options ---------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "cpus", "load", "target"), [
    ("auto", [0, 1], [1], [0]),
    ("auto", list(range(8)), [6, 7], [0, 1, 2, 3, 4, 5]),
    ("1/0", [0, 1], [1], [0]),
    ("6,7/0-5", list(range(8)), [6, 7], [0, 1, 2, 3, 4, 5]),
])
def test_pin_splits_cpus(spec: str, cpus: list[int], load: list[int], target: list[int]) -> None:
    assert split_cpus(spec, cpus) == (load, target)


@pytest.mark.parametrize(("spec", "cpus", "message"), [
    ("auto", [0], "at least 2"),
    ("0/0", [0, 1], "share CPUs"),
    ("1/5", [0, 1], "not available"),
    ("1", [0, 1], "LOAD/TARGET"),
    ("x/0", [0, 1], "not a CPU list"),
    ("/0", [0, 1], "not a CPU list"),
])
def test_pin_rejects_bad_specs(spec: str, cpus: list[int], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        split_cpus(spec, cpus)


@pytest.mark.parametrize(("field", "value", "flag"), [
    ("rate", 0.0, "--rate"), ("rate", -5.0, "--rate"), ("load_processes", 0, "--load-processes"),
    ("load_processes", 1000, "--load-processes"), ("pin", "9/8", "--pin"),
])
def test_load_options_are_validated(field: str, value: object, flag: str) -> None:
    with pytest.raises(UsageError, match=flag):
        RecordConfig(**{field: value}).validate()
