"""``--json``: the report dict as JSON (the stable machine-readable contract)."""

from typing import Any

import orjson

from asyncprof.renderers import register_report_renderer


@register_report_renderer("json")
def render_json(report: dict[str, Any]) -> str:
    return orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
