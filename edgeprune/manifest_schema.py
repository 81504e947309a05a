"""The manifest's published JSON Schema (`edgeprune/schemas/manifest.schema.json`) and its checker.

`check_manifest(data, where)` validates a parsed manifest against the schema, then checks what a static schema
cannot: each artifact's target is in the registry of target specs, its file has that target's suffix, its plan
names the same target, and no two entries share a file. The first problem found is raised as a one-line
`ConfigError` naming the file and the field.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path, PurePosixPath
from typing import Any

from edgeprune.errors import ConfigError
from edgeprune.target_specs import TARGET_SPECS

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "manifest.schema.json"
_FIX = "rebuild it with `edgeprune build`"


def load_schema() -> dict[str, Any]:
    """The manifest schema as a dict (a draft 2020-12 JSON Schema)."""
    return json.loads(SCHEMA_PATH.read_text())


@functools.cache
def _validator():  # noqa: ANN202 - jsonschema's validator class is imported lazily
    from jsonschema import Draft202012Validator

    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def check_manifest(data: Any, where: str) -> None:
    """Raise ConfigError naming `where` and the first failing field if `data` is not a valid manifest."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(data))
    if error is not None:
        raise ConfigError(f"{where}: {_describe(error)}; {_FIX}")
    seen: dict[str, int] = {}
    for i, entry in enumerate(data["artifacts"]):
        field = f"artifacts[{i}]"
        target = entry["target"]
        spec = TARGET_SPECS.get(target)
        if spec is None:
            raise ConfigError(f"{where}: {field}.target '{target}' is not a known target "
                              f"({', '.join(TARGET_SPECS)}); {_FIX}")
        suffix = PurePosixPath(entry["path"]).suffix
        if suffix not in spec.suffixes:
            raise ConfigError(f"{where}: {field}.path '{entry['path']}' is not a file of target '{target}' "
                              f"(expected {' or '.join(spec.suffixes)}); {_FIX}")
        if entry["plan"]["target"] != target:
            raise ConfigError(f"{where}: {field}.plan.target '{entry['plan']['target']}' differs from the entry's "
                              f"target '{target}'; {_FIX}")
        if entry["path"] in seen:
            raise ConfigError(f"{where}: {field}.path '{entry['path']}' is listed twice "
                              f"(also artifacts[{seen[entry['path']]}]); {_FIX}")
        seen[entry["path"]] = i


def _describe(error: Any) -> str:
    """One short phrase for a jsonschema error: the field path and what is wrong with it, values shortened."""
    path = _field(error.absolute_path)
    kind, expected, instance = error.validator, error.validator_value, error.instance
    if kind == "required":
        missing = [k for k in expected if isinstance(instance, dict) and k not in instance]
        name = missing[0] if missing else expected[0]
        return f"{_join(path, name)} is missing"
    if kind == "dependentRequired":
        have = next((k for k in expected if k in instance), "")
        need = [k for k in expected.get(have, ()) if k not in instance]
        return f"{_join(path, need[0] if need else have)} is missing (required with {have})"
    where = path or "the manifest"
    if kind == "type":
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{where} is {_short(instance)}, expected {wanted}"
    if kind in ("enum", "const"):
        allowed = ", ".join(map(json.dumps, expected)) if kind == "enum" else json.dumps(expected)
        return f"{where} is {_short(instance)}, expected one of: {allowed}"
    if kind == "pattern":
        return f"{where} {_short(instance)} does not match {expected}"
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[kind]
        return f"{where} is {_short(instance)}, expected {op} {expected}"
    if kind in ("minItems", "maxItems", "minLength"):
        bound = {"minItems": "at least {} item(s)", "maxItems": "at most {} item(s)",
                 "minLength": "at least {} character(s)"}
        return f"{where} is {_short(instance)}, expected {bound[kind].format(expected)}"
    return f"{where}: {_clip(error.message, 160)}"


def _field(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _short(value: Any) -> str:
    """A value as JSON, clipped to 60 characters."""
    return _clip(json.dumps(value, default=str), 60)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
