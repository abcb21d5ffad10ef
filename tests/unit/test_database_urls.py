import pytest

from asyncprof.database import open_database, redact
from asyncprof.errors import DatabaseError
from asyncprof_target.dburl import django_database


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://bob:hunter2@db.example:5433/app") == "postgresql://bob:***@db.example:5433/app"
    assert redact("postgresql://bob@db/app") == "postgresql://bob@db/app"


def test_django_database_understands_socket_urls() -> None:
    db = django_database("postgresql://postgres:@/postgres?host=/tmp/pg", conn_max_age=None)
    assert db["HOST"] == "/tmp/pg" and db["NAME"] == "postgres" and db["USER"] == "postgres"
    assert db["CONN_MAX_AGE"] is None


def test_django_database_tcp_url_with_password() -> None:
    db = django_database("postgres://u:p%40ss@h:6543/d")
    assert (db["HOST"], db["PORT"], db["USER"], db["PASSWORD"], db["NAME"]) == ("h", "6543", "u", "p@ss", "d")


def test_not_a_url_is_a_clear_database_error() -> None:
    with pytest.raises(DatabaseError, match="--db must be"):
        with open_database("mysql://nope"):
            pass


def test_unreachable_server_is_a_clear_database_error_without_password() -> None:
    with pytest.raises(DatabaseError) as err:
        with open_database("postgresql://u:topsecret@127.0.0.1:1/x"):
            pass
    assert "cannot connect" in str(err.value)
    assert "topsecret" not in str(err.value)
