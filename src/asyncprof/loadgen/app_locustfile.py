"""The locustfile asyncprof runs for a user's own locustfile: theirs, unedited, plus asyncprof's log.

``locust -f app_locustfile.py`` with ``ASYNCPROF_USER_LOCUSTFILE=/abs/path/locustfile.py``:

1. imports the user's file under its own module name, as Locust would (:data:`USER_MODULE` when that
   name is taken), with its directory first on ``sys.path`` (and kept there for the run) so it
   imports its sibling modules as it does under ``locust -f`` directly;
2. registers asyncprof's request log (:mod:`asyncprof.loadgen.request_listener`) and puts a W3C
   ``traceparent`` on every ``HttpSession``/``FastHttpSession`` request
   (:func:`asyncprof.loadgen.trace_headers.install`);
3. copies the user's runnable ``User`` classes and ``LoadTestShape`` classes, under their own names,
   into this module's globals: Locust takes its users from the globals of the file it loads
   (``locust.util.load_locustfile``), with the same tests as here.

Hosts: Locust's ``--host`` replaces every user class's ``host`` (``locust.runners``: ``if
environment.host: user_class.host = environment.host``); asyncprof always passes ``--host``, so the
user's classes load the app under test, and a class's own ``host`` counts only when Locust runs
without ``--host``.  Requests to absolute URLs still go where they say (with a ``traceparent``).

Failures: a user file that is missing, does not import, or defines no runnable ``User`` class
ends the process (exit status 1) after a last stderr line ``asyncprof: ...`` that names the file
and the cause; :func:`asyncprof.collectors.loadgen.check_locustfile` reports that line.

Only the ``requests`` and ``geventhttpclient`` clients of Locust's ``HttpUser`` and
``FastHttpUser`` get headers; other users' requests are logged, without trace ids.
"""

import importlib.machinery
import importlib.util
import os
import sys
import traceback
from types import ModuleType

from locust.util.load_locustfile import is_shape_class, is_user_class

from asyncprof.loadgen import request_listener  # noqa: F401 - registers the request log's listeners
from asyncprof.loadgen.trace_headers import install as _install_trace_headers

#: The environment variable naming the user's locustfile (an absolute path).
ENV = "ASYNCPROF_USER_LOCUSTFILE"
#: The module name the user's file is imported under when its own name is taken (see :func:`_module_name`).
USER_MODULE = "asyncprof_user_locustfile"


def _module_name(path: str) -> str:
    """The user's file's module name: its stem, as Locust names it, unless a loaded module has that name.

    The stem keeps ``import locustfile`` in the user's helper modules returning the running file
    (not a second copy that would register its listeners twice); a taken name (``app_locustfile``,
    this file; ``gevent``; ...) must not replace the module already loaded under it.
    """
    stem = os.path.splitext(os.path.basename(path))[0]
    stem = "locustfile" if stem == "locust" else stem
    return stem if stem.isidentifier() and stem not in sys.modules else USER_MODULE


def _fail(message: str) -> None:
    # The last line is the one asyncprof shows: keep it one line and naming the file.
    sys.stderr.write(f"asyncprof: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)


def _where(error: BaseException, path: str) -> str:
    """`` (line N)`` for the deepest frame of *error* in the user's file, or ``""``."""
    if isinstance(error, SyntaxError):
        return ""  # its message already says "(file, line N)"
    line = ""
    for frame in traceback.extract_tb(error.__traceback__):
        if os.path.abspath(frame.filename) == path:
            line = f" (line {frame.lineno})"
    return line


def _import_user_file(path: str) -> ModuleType:
    """Import the user's locustfile *path* (see :func:`_module_name`); exit with one line when it fails."""
    directory = os.path.dirname(path)
    sys.path.insert(0, directory)
    name = _module_name(path)
    # An explicit source loader, as Locust uses: a locustfile need not end in .py.
    spec = importlib.util.spec_from_file_location(name, path, loader=importlib.machinery.SourceFileLoader(name, path))
    if spec is None or spec.loader is None:
        _fail(f"locustfile {path} cannot be loaded as Python source")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # dataclasses, pickle and the user's own imports look their module up here
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001 - anything the user's code raises stops the load
        traceback.print_exc()
        message = " ".join(f"{type(error).__name__}: {error}".split())
        _fail(f"locustfile {path} does not import: {message}{_where(error, path)}")
    finally:
        # Locust deletes sys.path[0] after this file is imported, expecting its own entry for this
        # file's directory there: hand it back in that state, the user's directory right behind it.
        sys.path.remove(directory)
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path.insert(1 if sys.path and os.path.abspath(sys.path[0]) == here else 0, directory)
    return module


def _load() -> dict[str, type]:
    """The user's ``User`` and ``LoadTestShape`` classes by name, as Locust would take them."""
    path = os.environ.get(ENV, "")
    if not path:
        _fail(f"{ENV} is not set: it names the locustfile to run (an absolute path)")
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        _fail(f"locustfile {path} does not exist")
    module = _import_user_file(path)
    found = {name: value for name, value in vars(module).items() if is_user_class(value) or is_shape_class(value)}
    if not any(is_user_class(value) for value in found.values()):
        _fail(f"locustfile {path} defines no User class (no subclass of HttpUser, FastHttpUser or User "
              "that is not abstract)")
    return found


_install_trace_headers()
globals().update(_load())
