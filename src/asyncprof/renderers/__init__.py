"""Renderers: turn analysis results into an output format.

Each renderer is registered under a name and takes the report dict (or, for
profile formats, the run); a new output is a new module here, not a branch in
the CLI.
"""

from collections.abc import Callable
from typing import Any

Renderer = Callable[[dict[str, Any]], str]
REPORT_RENDERERS: dict[str, Renderer] = {}


def register_report_renderer(name: str) -> Callable[[Renderer], Renderer]:
    def decorate(fn: Renderer) -> Renderer:
        REPORT_RENDERERS[name] = fn
        return fn

    return decorate


def render_report(name: str, report: dict[str, Any]) -> str:
    from asyncprof.renderers import json_report, terminal  # noqa: F401 - registration side effect

    return REPORT_RENDERERS[name](report)
