"""The calibration scenario's request cost: ``cpu_ms=A,db_ms=B,block_ms=C,hops=D``.

A calibrate request does a known amount of each kind of work, in this order:
``cpu_ms`` of this thread's CPU, ``db_ms`` waiting inside PostgreSQL
(``pg_sleep``), ``block_ms`` blocking its thread (``time.sleep``), and
``hops`` sync<->async crossings.  asyncprof parses and validates the text
given to ``--calibrate`` here and passes the canonical form to the workers in
the ``ASYNCPROF_CALIBRATE`` environment variable; the target parses that
again itself (``asyncprof_target.calibrate``), since it never imports
asyncprof.
"""

import math
from dataclasses import dataclass

from asyncprof.errors import UsageError

ENV_VAR = "ASYNCPROF_CALIBRATE"
MS_KEYS = ("cpu_ms", "db_ms", "block_ms")
KEYS = (*MS_KEYS, "hops")
MAX_MS = 10_000.0
MAX_HOPS = 1000
EXAMPLE = "e.g. cpu_ms=5,db_ms=10,block_ms=2,hops=2"
_HINT = f"keys: {', '.join(KEYS)}, each at most once, missing ones are 0; {EXAMPLE}"


@dataclass(frozen=True)
class Calibration:
    """What one calibrate request costs.

    ``cpu_ms``, ``db_ms`` and ``block_ms`` are milliseconds in ``[0, MAX_MS]``;
    ``hops`` is a count in ``[0, MAX_HOPS]``.  Instances built by
    :func:`parse_calibration` always satisfy these bounds.
    """

    cpu_ms: float = 0.0
    db_ms: float = 0.0
    block_ms: float = 0.0
    hops: int = 0

    def to_env(self) -> str:
        """The canonical text, every key in :data:`KEYS` order, e.g. ``cpu_ms=5,db_ms=10,block_ms=2,hops=2``.

        ``parse_calibration(c.to_env()) == c`` for every valid ``c``; whole
        milliseconds are written without a decimal point.
        """
        return ",".join([*(f"{key}={_format_ms(getattr(self, key))}" for key in MS_KEYS), f"hops={self.hops}"])


def _format_ms(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse_calibration(text: str) -> Calibration:
    """Parse ``key=value`` pairs separated by commas into a :class:`Calibration`.

    Keys are ``cpu_ms``, ``db_ms``, ``block_ms`` (finite numbers of
    milliseconds, 0 to 10,000) and ``hops`` (a whole number, 0 to 1000);
    missing keys are 0 and spaces around items are ignored.  Raises
    :class:`UsageError` with one message naming the offending item on any
    other input: empty text or item, no ``=``, an unknown or repeated key, a
    value that is not a number, negative, infinite or too large.
    """
    if not text.strip():
        raise UsageError("--calibrate is empty", _HINT)
    values: dict[str, float | int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise UsageError(f"--calibrate {text!r} has an empty item", _HINT)
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep:
            raise UsageError(f"--calibrate item {item!r} is not key=value", _HINT)
        if key not in KEYS:
            raise UsageError(f"--calibrate has unknown key {key!r}", _HINT)
        if key in values:
            raise UsageError(f"--calibrate gives {key} more than once", _HINT)
        values[key] = _parse_hops(raw) if key == "hops" else _parse_ms(key, raw)
    return Calibration(
        cpu_ms=float(values.get("cpu_ms", 0.0)),
        db_ms=float(values.get("db_ms", 0.0)),
        block_ms=float(values.get("block_ms", 0.0)),
        hops=int(values.get("hops", 0)),
    )


def _parse_ms(key: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"--calibrate {key} must be a number of milliseconds, not {raw!r}", _HINT) from None
    if not math.isfinite(value) or not (0 <= value <= MAX_MS):
        raise UsageError(f"--calibrate {key} must be between 0 and {MAX_MS:,.0f} ms, not {raw}", _HINT)
    return value + 0.0  # -0.0 -> 0.0


def _parse_hops(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"--calibrate hops must be a whole number, not {raw!r}", _HINT) from None
    if not (0 <= value <= MAX_HOPS):
        raise UsageError(f"--calibrate hops must be between 0 and {MAX_HOPS}, not {value}", _HINT)
    return value
