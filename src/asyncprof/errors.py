"""One exception tree: every failure a user can cause or meet is an AsyncprofError.

The CLI turns any of them into a single line, ``error: <message> (<hint>)``,
and exits with the class's ``exit_code``; nothing below the CLI prints.
"""

import errno
from pathlib import Path


class AsyncprofError(Exception):
    """Base class. *hint* says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.run_path: Path | None = None  # the run directory that keeps what was recorded, if any

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(AsyncprofError):
    """Bad command-line input: unknown mode or scenario, out-of-range numbers."""

    exit_code = 2


class DatabaseError(AsyncprofError):
    """PostgreSQL could not be started, reached or prepared."""

    exit_code = 2


class PortInUseError(AsyncprofError):
    """The requested port is taken."""

    exit_code = 2


class ServerError(AsyncprofError):
    """The target server did not start or died before it was ready."""

    exit_code = 3


class UpstreamError(AsyncprofError):
    """The fanout scenario's upstream HTTP service did not start or died before it was ready."""

    exit_code = 3


class LoadError(AsyncprofError):
    """The load generator did not start or produced no requests."""

    exit_code = 3


class RunNotFoundError(AsyncprofError):
    """No run directory matches what was asked for."""

    exit_code = 2


class CorruptRunError(AsyncprofError):
    """A run directory exists but its manifest cannot be read."""

    exit_code = 3


class Interrupted(AsyncprofError):
    """Ctrl-C or SIGTERM during a recording; what was recorded is kept."""

    exit_code = 130


class DiskFullError(AsyncprofError):
    """A write into the run directory failed for want of space (or a file-size limit): the run stops."""

    exit_code = 3


#: errno values that mean "no room to write": disk full, quota exceeded, file-size limit.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def disk_full_error(exc: BaseException, what: object) -> DiskFullError | None:
    """*exc* as a :class:`DiskFullError` saying it happened while writing *what*, or None if it is another failure."""
    if not isinstance(exc, OSError) or exc.errno not in DISK_FULL_ERRNOS:
        return None
    cause = "file too large (the file-size limit, ulimit -f)" if exc.errno == errno.EFBIG else \
        "disk quota exceeded" if exc.errno == errno.EDQUOT else "disk full"
    return DiskFullError(f"{cause} while writing {what}",
                         "free some space (or raise the limit); what was written before is kept")
