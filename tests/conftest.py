"""Shared fixtures: where runs go, and whether this machine's PostgreSQL service answers."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

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
