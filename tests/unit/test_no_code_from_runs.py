"""Opening a run never runs code from it: the readers parse JSON and text, nothing else.

A run directory is something people attach to bug reports and send to each other.  The modules
that read runs (everything but the code that runs inside the measured workers and the load
generator, which import the user's own application and locustfile on purpose) must not
deserialise objects (pickle and friends), evaluate text or import modules named by data.
"""

import ast
from pathlib import Path

import asyncprof

PACKAGE = Path(asyncprof.__file__).parent
#: Code that runs in the measured processes, importing the user's app or locustfile by design.
IN_PROCESS = ("worker", "loadgen")
UNSAFE_MODULES = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib", "yaml", "jsonpickle"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
UNSAFE_METHODS = {"import_module", "exec_module", "load_module", "eval", "exec"}  # re.compile is fine


def _offences(path: Path, root: Path = PACKAGE) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in UNSAFE_BUILTINS:
                found.append(f"{func.id}() at line {node.lineno}")
            elif isinstance(func, ast.Attribute) and func.attr in UNSAFE_METHODS:
                found.append(f".{func.attr}() at line {node.lineno}")
    return [f"{path.relative_to(root)}: {what}" for what in found]


def test_the_readers_deserialise_no_objects_and_evaluate_nothing() -> None:
    modules = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in IN_PROCESS]
    assert len(modules) > 30  # the scan sees the package
    offences = [o for p in modules for o in _offences(p)]
    assert not offences, offences


def test_the_scan_catches_what_it_must(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import pickle\nfrom yaml import load\nimport importlib\n"
                      "x = eval('1')\nimportlib.import_module('os')\nimport json, re\njson.loads('1')\nre.compile('x')\n")
    assert len(_offences(sample, tmp_path)) == 4
