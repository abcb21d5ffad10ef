"""Keep secrets out of exported spans.

Spans leave the machine (a Jaeger collector, a JSON file someone uploads), so whatever could carry a
credential is masked before it does:

* attributes whose *key* names a secret: HTTP ``Authorization``, ``Proxy-Authorization``, ``Cookie`` and
  ``Set-Cookie`` headers (as OTel's header capture names them, ``http.request.header.cookie``, or
  anything else containing those words), and keys containing ``password``, ``passwd``, ``secret``,
  ``token``, ``api_key``/``apikey``;
* in string *values*: the password of a URL (``postgresql://user:pw@host`` → ``user:***@host``), of
  a libpq ``key=value`` DSN (``password=pw``) and of SQL ``PASSWORD 'pw'``;
* exact values the caller knows to be secret (the workers pass their ``DJANGO_SECRET_KEY`` and the
  database password from ``DATABASE_URL``).

Masked values become ``***``, the run manifest's convention.  The checks are cheap substring tests
first, so a span without secrets costs a few microseconds and is returned as it was.
"""

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

MASK = "***"
_SECRET_KEY_WORDS = ("authorization", "cookie", "password", "passwd", "secret", "token", "api_key", "apikey",
                     "api-key")
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^/\s:@]*):([^@\s/]*)@", re.IGNORECASE)
_DSN_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
_SQL_PASSWORD = re.compile(r"(\bpassword\s+)('[^']*'|\"[^\"]*\")", re.IGNORECASE)


def secret_key(key: str) -> bool:
    """Whether an attribute named *key* holds a credential by its name alone."""
    k = key.lower()
    return any(word in k for word in _SECRET_KEY_WORDS)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """*text* with URL/DSN/SQL passwords and the given exact *secrets* replaced by ``***``."""
    for s in secrets:
        if s and s in text:
            text = text.replace(s, MASK)
    if "@" in text and "://" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@" if m.group(2) else m.group(0), text)
    if "assword" in text or "ASSWORD" in text:
        text = _DSN_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
        text = _SQL_PASSWORD.sub(lambda m: f"{m.group(1)}'{MASK}'", text)
    return text


def redact_value(key: str, value: Any, secrets: Iterable[str] = ()) -> Any:
    """The value to export for attribute *key*: ``***`` for secret keys, masked text, else *value*."""
    if secret_key(key):
        return MASK
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, (list, tuple)) and any(isinstance(v, str) for v in value):
        return type(value)(redact_text(v, secrets) if isinstance(v, str) else v for v in value)
    return value


def redact_attributes(attrs: Mapping[str, Any] | None, secrets: Iterable[str] = ()) -> dict[str, Any] | None:
    """A masked copy of *attrs*, or None when nothing in them needed masking (the common case)."""
    if not attrs:
        return None
    secrets = tuple(s for s in secrets if s)
    out: dict[str, Any] | None = None
    for key, value in attrs.items():
        new = redact_value(key, value, secrets)
        if new is not value and new != value:
            if out is None:
                out = dict(attrs)
            out[key] = new
    return out


def redact_otlp_attributes(attrs: list[dict[str, Any]], secrets: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The same for an OTLP/JSON ``KeyValue`` list (``[{"key", "value": {"stringValue": ...}}]``), in place."""
    secrets = tuple(s for s in secrets if s)
    for kv in attrs:
        key = kv.get("key", "")
        value = kv.get("value")
        if not isinstance(value, dict):
            continue
        if secret_key(key):
            kv["value"] = {"stringValue": MASK}
        elif isinstance(value.get("stringValue"), str):
            value["stringValue"] = redact_text(value["stringValue"], secrets)
        elif "arrayValue" in value:
            for item in (value.get("arrayValue") or {}).get("values") or []:
                if isinstance(item, dict) and isinstance(item.get("stringValue"), str):
                    item["stringValue"] = redact_text(item["stringValue"], secrets)
    return attrs


def environment_secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    """The exact secrets a worker's environment holds: Django's SECRET_KEY and the database password."""
    out = []
    if key := env.get("DJANGO_SECRET_KEY"):
        out.append(key)
    if url := env.get("DATABASE_URL"):
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password and len(password) >= 4:  # a one-letter password would mask every such letter
            out.append(password)
    return tuple(out)
