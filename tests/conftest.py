"""Shared fixtures: where runs go, and whether this machine's PostgreSQL service answers."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def _import_locust_unpatched() -> None:
    """Import Locust once, first, without its gevent ``monkey.patch_all()``.

    The unit tests read Locust's classes in this process; patched after other tests have started
    threads, the import deadlocks on an import lock, and patched at all, ``threading`` in the
    accounting tests would be greenlets.  The variable is removed again at once, so the Locust
    processes the integration tests start are patched as in a real run.
    """
    os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
    try:
        import locust  # noqa: F401
    finally:
        del os.environ["LOCUST_SKIP_MONKEY_PATCH"]


_import_locust_unpatched()

# The tests check the breakdown of every request of short runs: each run follows every request
# (``--sample-traces 1``) unless a test says otherwise; tests/integration/test_sampling.py records
# with the default sample.
os.environ["ASYNCPROF_SAMPLE_TRACES"] = "1"

SERVICE_URL = os.environ.get("ASYNCPROF_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def service_available() -> bool:
    import psycopg2

    try:
        psycopg2.connect(SERVICE_URL, connect_timeout=2).close()
    except psycopg2.Error:
        return False
    return True


@pytest.fixture(scope="session")
def service_url() -> str:
    """The PostgreSQL service on 127.0.0.1:5432; tests that need it skip, saying so, where none runs."""
    if not service_available():
        pytest.skip(f"no PostgreSQL service answers at {SERVICE_URL} (set ASYNCPROF_TEST_PG to use another)")
    return SERVICE_URL


@pytest.fixture
def traces(tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "traces"
    out.mkdir()
    yield out
