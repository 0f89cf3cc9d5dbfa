"""The configuration reference (docs/configuration.md), generated from the Settings
object so it cannot drift from what penny reads: `penny config-reference`."""

from __future__ import annotations

import json
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from penny.settings import Settings

ENV_PREFIX = "PENNY_"
NESTED_DELIMITER = "__"
# Defaults computed from the machine it runs on: the reference says how instead.
MACHINE_DEPENDENT = {"data_dir"}

HEADER = """\
# Configuration reference

Generated from `penny/settings.py` by `penny config-reference --output
docs/configuration.md`; a test fails when this file and the settings disagree.

Every setting is an environment variable. Values of dict and nested types are JSON
(`PENNY_MODELS='{"qwen": "Qwen/Qwen2.5-0.5B-Instruct"}'`); a nested field can also be set
alone with `__` (`PENNY_DEFAULT_PRICE__ENGINE_HOUR_USD=1.20`). Command-line options
(`--host`, `--port`, `--metrics-port`, `--log-format`, `--model`) take precedence over
the variables they name.
"""


def type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        named = [type_name(a) for a in args if a is not type(None)]
        optional = ", optional" if type(None) in args else ""
        return " or ".join(named) + optional
    if origin is dict:
        return f"JSON object of {type_name(args[0])} → {type_name(args[1])}"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _default(name: str, field: FieldInfo) -> str:
    if name in MACHINE_DEPENDENT:
        return "see description"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    adapter: TypeAdapter[Any] = TypeAdapter(field.annotation or type(value))
    dumped = adapter.dump_python(value, mode="json")
    return f"`{json.dumps(dumped, separators=(', ', ': '))}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(model: type[BaseModel], prefix: str | None) -> list[str]:
    """One row per field: named by its variable, or (prefix None) by its JSON key."""
    rows = []
    for name, field in model.model_fields.items():
        label = name if prefix is None else prefix + name.upper()
        rows.append(f"| `{label}` | {_cell(type_name(field.annotation))} | "
                    f"{_cell(_default(name, field))} | {_cell(field.description or '')} |")
    return rows


def _nested_models(model: type[BaseModel]) -> dict[type[BaseModel], list[str]]:
    """Models nested in the settings (directly, or as dict values) -> the settings that
    hold them."""
    nested: dict[type[BaseModel], list[str]] = {}
    for name, field in model.model_fields.items():
        candidates = [field.annotation, *get_args(field.annotation)]
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                nested.setdefault(candidate, []).append(name)
    return nested


def render() -> str:
    header = ["| {} | type | default | what it does |", "|---|---|---|---|"]
    lines = [HEADER, header[0].format("variable"), header[1], *_rows(Settings, ENV_PREFIX)]
    for nested, names in _nested_models(Settings).items():
        holders = ", ".join(f"`{ENV_PREFIX}{n.upper()}`" for n in names)
        lines += ["", f"## {nested.__name__}", "", _cell(nested.__doc__ or ""), "",
                  f"The JSON object in {holders} (in each value, for a dict setting):", "",
                  header[0].format("key"), header[1], *_rows(nested, None)]
    return "\n".join(lines) + "\n"
