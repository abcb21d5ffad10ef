"""The user's project (``record --app``): checked before anything starts, one clear line when wrong."""

import os
from pathlib import Path

import pytest

from asyncprof.config import APP_SCENARIO, RecordConfig
from asyncprof.errors import UsageError
from asyncprof.project import SetupError, load_project, parse_paths, pg_variables, project_packages, run_setup

SHOP = Path(__file__).resolve().parent.parent / "fixtures" / "shopapp"


def _project(tmp_path: Path, manage: str | None = None) -> Path:
    """A minimal project tree: mysite/{__init__,settings,wsgi,asgi}.py, an app, tooling files."""
    (tmp_path / "mysite").mkdir()
    for name in ("__init__", "settings", "wsgi", "asgi"):
        (tmp_path / "mysite" / f"{name}.py").write_text("")
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "__init__.py").write_text("")
    (tmp_path / "static").mkdir()
    (tmp_path / "locustfile.py").write_text("")
    (tmp_path / "helpers.py").write_text("")
    if manage is not None:
        (tmp_path / "manage.py").write_text(manage)
    return tmp_path


def test_the_shop_fixture_resolves_with_its_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    project = load_project(SHOP, wsgi="shopsite.wsgi:application", asgi="shopsite.asgi:application", settings=None)
    assert project.settings == "shopsite.settings"
    assert project.packages == ("catalog", "shopsite")
    assert project.application("wsgi", "sync") == "shopsite.wsgi:application"
    assert project.application("asgi", "async") == "shopsite.asgi:application"


def test_settings_come_from_the_flag_then_the_environment_then_manage_py(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path, manage='import os\nos.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")\n')
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    assert load_project(root, wsgi="mysite.wsgi:application", asgi=None, settings=None).settings == "mysite.settings"
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "mysite.wsgi")
    assert load_project(root, wsgi="mysite.wsgi:application", asgi=None, settings=None).settings == "mysite.wsgi"
    assert load_project(root, wsgi="mysite.wsgi:application", asgi=None, settings="mysite").settings == "mysite"


def test_packages_leave_out_tooling_tests_and_plain_directories(tmp_path: Path) -> None:
    assert project_packages(_project(tmp_path, manage="")) == ("helpers", "mysite", "shop")


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"wsgi": None, "asgi": None}, "--wsgi MODULE:ATTR"),
    ({"wsgi": "mysite.wsgi", "asgi": None}, "expected MODULE:ATTRIBUTE"),
    ({"wsgi": "mysite/wsgi.py:application", "asgi": None}, "is not a module name"),
    ({"wsgi": "nosuch.wsgi:application", "asgi": None}, "module nosuch.wsgi is not in"),
    ({"wsgi": "mysite.wsgi:application", "asgi": None, "settings": "mysite.nosettings"}, "mysite.nosettings"),
])
def test_bad_projects_are_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, str],
                                       says: str) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    root = _project(tmp_path, manage='os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")')
    with pytest.raises(UsageError) as info:
        load_project(root, **{"settings": None, **kwargs})
    assert says in str(info.value)


def test_no_settings_anywhere_asks_for_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    with pytest.raises(UsageError, match="--settings"):
        load_project(_project(tmp_path), wsgi="mysite.wsgi:application", asgi=None, settings=None)
    with pytest.raises(UsageError, match="no such directory"):
        load_project(tmp_path / "missing", wsgi="a:b", asgi=None, settings=None)


def test_a_mode_without_its_application_names_the_missing_flag() -> None:
    project = load_project(SHOP, wsgi="shopsite.wsgi:application", asgi=None, settings=None)
    with pytest.raises(UsageError) as info:
        project.application("asgi", "async")
    assert "mode 'async' serves ASGI" in str(info.value) and "--asgi shopsite.asgi:application" in str(info.value)


def test_paths_take_weights_and_query_strings() -> None:
    assert parse_paths(["/items/:3", "/work/?cpu_ms=5&db_ms=2", "/a:b/"]) == (
        ("/items/", "/items/", 3), ("/work/?cpu_ms=5&db_ms=2", "/work/?cpu_ms=5&db_ms=2", 1), ("/a:b/", "/a:b/", 1))
    for bad in ("items/", "/a b/", "/x/:0", "/a,b/"):
        with pytest.raises(UsageError):
            parse_paths([bad])


def test_pg_variables_follow_the_url() -> None:
    assert pg_variables("postgresql://shop:s%40cret@db.internal:6543/shopdb") == {
        "PGHOST": "db.internal", "PGPORT": "6543", "PGUSER": "shop", "PGPASSWORD": "s@cret", "PGDATABASE": "shopdb"}
    assert pg_variables("postgresql://postgres:@/postgres?host=/tmp/pg.sock") == {
        "PGHOST": "/tmp/pg.sock", "PGUSER": "postgres", "PGDATABASE": "postgres"}


def test_setup_output_is_logged_and_a_failure_shows_its_last_lines(tmp_path: Path) -> None:
    project = load_project(SHOP, wsgi="shopsite.wsgi:application", asgi=None, settings=None)
    log = tmp_path / "logs" / "setup.log"
    run_setup('echo "in $PWD with $PGDATABASE"', project, {**os.environ, "PGDATABASE": "shopdb"}, log)
    assert f"in {SHOP} with shopdb" in log.read_text()
    with pytest.raises(SetupError) as info:
        run_setup("echo first; echo 'it went wrong' >&2; exit 4", project, dict(os.environ), log)
    assert "exit 4" in str(info.value) and "it went wrong" in str(info.value)
    with pytest.raises(SetupError, match="did not finish within 1 s"):
        run_setup("sleep 30", project, dict(os.environ), log, timeout=1)


def test_record_config_with_an_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    config = RecordConfig(mode="sync", app=SHOP, wsgi="shopsite.wsgi:application", paths=("/items/:2",)).validate()
    assert config.scenario == APP_SCENARIO and config.view is None
    assert config.endpoints == (("/items/", "/items/", 2),)
    data = config.to_manifest()
    assert data["app"] == str(SHOP) and data["app_packages"] == ["catalog", "shopsite"]
    default = RecordConfig(mode="sync", app=SHOP, wsgi="shopsite.wsgi:application").validate()
    assert default.endpoints == (("/", "/", 1),)


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"mode": "async", "wsgi": "shopsite.wsgi:application"}, "--asgi"),
    ({"scenario": "orm"}, "--scenario orm is the bundled target's"),
    ({"view": "async"}, "--view"),
    ({"locustfile": Path("/no/such/locustfile.py")}, "no such file"),
    ({"locustfile": SHOP / "locustfile.py", "paths": ("/",)}, "give one of them"),
    ({"locustfile": SHOP / "locustfile.py", "rate": 10.0}, "--rate"),
])
def test_record_config_app_errors(kwargs: dict[str, object], says: str) -> None:
    base: dict[str, object] = {"mode": "sync", "app": SHOP, "wsgi": "shopsite.wsgi:application"}
    with pytest.raises(UsageError) as info:
        RecordConfig(**{**base, **kwargs}).validate()  # type: ignore[arg-type]
    assert says in str(info.value)


def test_project_flags_without_app_are_refused() -> None:
    with pytest.raises(UsageError, match="--app DIR"):
        RecordConfig(mode="sync", wsgi="x.wsgi:application").validate()
