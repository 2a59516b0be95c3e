"""The report's schema (``gpu_check.json``), as a small JSON-Schema-like dict, and its validator.

No dependency: ``run`` validates its own report before writing it, with or without the packages it
installs. Types: ``object`` (``properties``, ``required``; ``values`` for a mapping of any keys),
``array`` (``items``), ``string``, ``number``, ``integer``, ``boolean``, ``null``; a list of types
allows any of them; ``enum`` restricts values.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1
#: A part's outcome: every check passed; a check failed; the part raised (``error`` holds the text);
#: its time budget ran out before it started or finished (``skipped_for_time`` says what was left).
STATUSES = ("ok", "failed", "error", "skipped_for_time")

_NUM = ["number", "null"]
_STR = ["string", "null"]


def _part(**fields: Any) -> dict:
    """A part: status, its time, what was skipped for time, the error text, and its own fields."""
    return {"type": "object", "required": ["status", "seconds", "budget_seconds", "skipped_for_time", "error",
                                           *fields],
            "properties": {"status": {"type": "string", "enum": list(STATUSES)},
                           "seconds": {"type": "number"}, "budget_seconds": {"type": "number"},
                           "skipped_for_time": {"type": "array", "items": {"type": "string"}},
                           "error": {"type": _STR}, **fields}}


def _runs(**fields: Any) -> dict:
    return {"type": "array", "items": {"type": "object", "required": ["status", *fields],
                                       "properties": {"status": {"type": "string", "enum": list(STATUSES)},
                                                      "error": {"type": _STR}, **fields}}}


RECIPE_RUN = {"method": {"type": "string"}, "pattern": {"type": "string"},
              "target_remaining_pct": {"type": _NUM}, "remaining_pct": {"type": _NUM},
              "abs_error_pct": {"type": _NUM}, "tolerance_pct": {"type": _NUM},
              "steps": {"type": ["integer", "null"]}, "train_seconds": {"type": _NUM},
              "bf16": {"type": ["boolean", "null"]}}
RESUME_RUN = {"method": {"type": "string"}, "resumed_from_step": {"type": ["integer", "null"]},
              "masks_equal": {"type": ["boolean", "null"]}, "max_weight_diff": {"type": _NUM},
              "metrics_equal": {"type": ["boolean", "null"]}}
EXPORT = {"format": {"type": "string"}, "max_abs_diff_to_run_logits": {"type": _NUM},
          "exporter_max_abs_diff": {"type": _NUM}, "predictions_agree": {"type": ["boolean", "null"]}}
MINILM_RUN = {"label": {"type": "string"}, "method": {"type": "string"}, "epochs": {"type": _NUM},
              "steps_planned": {"type": ["integer", "null"]}, "steps_done": {"type": ["integer", "null"]},
              "accuracy": {"type": _NUM}, "remaining_pct": {"type": _NUM}, "seconds": {"type": _NUM},
              "curve": {"type": "array", "items": {"type": "object"}}}

REPORT_SCHEMA: dict = {
    "type": "object",
    "required": ["schema_version", "mode", "started_at", "wall_seconds", "budget_seconds", "environment",
                 "parts", "summary"],
    "properties": {
        "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
        "mode": {"type": "string", "enum": ["full", "smoke"]},
        "started_at": {"type": "string"},
        "wall_seconds": {"type": "number"},
        "budget_seconds": {"type": "number"},
        "environment": {
            "type": "object",
            "required": ["python", "platform", "torch", "cuda", "device", "packages", "wheels_installed",
                         "pack_verified"],
            "properties": {"python": {"type": "string"}, "platform": {"type": "string"},
                           "torch": {"type": _STR}, "cuda": {"type": _STR}, "device": {"type": "string"},
                           "device_name": {"type": _STR},
                           "packages": {"type": "object", "values": {"type": _STR}},
                           "wheels_installed": {"type": "array", "items": {"type": "string"}},
                           "pack_verified": {"type": ["boolean", "null"]}}},
        "parts": {
            "type": "object",
            "required": ["recipes", "resume", "exports", "train_overhead", "minilm_sst2"],
            "properties": {
                "recipes": _part(runs=_runs(**RECIPE_RUN)),
                "resume": _part(runs=_runs(**RESUME_RUN)),
                "exports": _part(run={"type": _STR}, formats=_runs(**EXPORT)),
                "train_overhead": _part(command={"type": "array", "items": {"type": "string"}},
                                        report={"type": ["object", "null"]}),
                "minilm_sst2": _part(runs=_runs(**MINILM_RUN)),
            }},
        "summary": {"type": "object", "required": ["ok", "failed", "skipped_for_time"],
                    "properties": {k: {"type": "array", "items": {"type": "string"}}
                                   for k in ("ok", "failed", "skipped_for_time")}},
    },
}

_PY_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(value: Any, kind: str) -> bool:
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, _PY_TYPES[kind])


def validate(value: Any, schema: dict = REPORT_SCHEMA, where: str = "report") -> list[str]:
    """Every way ``value`` breaks ``schema``, one line each naming the key (empty: it conforms)."""
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if kinds and not any(_is(value, k) for k in kinds):
        return [f"{where}: expected {' or '.join(kinds)}, got {type(value).__name__} {value!r:.60}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    problems: list[str] = []
    if isinstance(value, dict):
        problems += [f"{where}: missing key '{k}'" for k in schema.get("required", []) if k not in value]
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                problems += validate(value[key], sub, f"{where}.{key}")
        if "values" in schema:
            for key, item in value.items():
                problems += validate(item, schema["values"], f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += validate(item, schema["items"], f"{where}[{i}]")
    return problems
