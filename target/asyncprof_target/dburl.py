"""Turn a ``postgresql://`` URL into Django's DATABASES entry.

Kept here rather than pulling in dj-database-url: it is twelve lines, and the
target must not depend on anything a stock Django project would not have.
Unix-socket URLs (``postgresql://user@/db?host=/path``) are supported because
the embedded PostgreSQL listens on a socket only.
"""

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


def django_database(url: str, conn_max_age: int | None = 0) -> dict[str, Any]:
    """Return a DATABASES["default"] dict for *url*; raise ValueError if it is not PostgreSQL."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"not a PostgreSQL URL: scheme {parts.scheme!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or query.get("dbname", "postgres"),
        "USER": unquote(parts.username or query.get("user", "postgres")),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": query.get("host") or parts.hostname or "",
        "PORT": str(parts.port or query.get("port", "")),
        "CONN_MAX_AGE": conn_max_age,
    }
