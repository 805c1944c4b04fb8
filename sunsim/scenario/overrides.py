"""``--set KEY=VALUE`` overrides: a dotted key into the scenario (or sweep) mapping and a YAML value,
applied to the raw mapping before it is validated, so an override is checked like the file itself."""

from __future__ import annotations

import re
from typing import Any

import yaml

from sunsim.scenario.limits import ScenarioError
from sunsim.scenario.safe_yaml import safe_load_unique, value_error_text


def parse_override(text: str) -> tuple[list[str], Any]:
    """``workload.rate=30`` -> (["workload", "rate"], 30); the value is parsed as YAML."""
    if "=" not in text:
        raise ScenarioError(f"--set {text!r}: expected KEY=VALUE, e.g. workload.rate=30")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ScenarioError(f"--set {text!r}: empty key")
    try:
        return path, safe_load_unique(raw)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"--set {key.strip()}: the value is not valid YAML: {' '.join(str(exc).split())}") from None
    except ValueError as exc:  # an integer of more than 4300 digits, a date such as 2023-02-30
        raise ScenarioError(f"--set {key.strip()}: the value is not readable: {value_error_text(exc)}") from None


def apply_override(data: dict, path: list[str], value: Any) -> None:
    """Set a nested key; list items are addressed by index or, for variants, by name."""
    node: Any = data
    for i, part in enumerate(path[:-1]):
        node = _child(node, part, create=True, where=".".join(path[: i + 1]))
    last = path[-1]
    if isinstance(node, list):
        node[_list_index(node, last, ".".join(path))] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ScenarioError(f"--set {'.'.join(path)}: {'.'.join(path[:-1])} is not a mapping")


#: A list index in a ``--set`` key: ASCII digits only ('²'.isdigit() is true, int('²') fails).
_INDEX = re.compile(r"-?[0-9]{1,9}")


def _list_index(node: list, part: str, where: str) -> int:
    if _INDEX.fullmatch(part):
        idx = int(part)
        if -len(node) <= idx < len(node):
            return idx
    for idx, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == part:
            return idx
    raise ScenarioError(f"--set {where}: no list item {part!r}")


def _child(node: Any, part: str, create: bool, where: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, where)]
    if not isinstance(node, dict):
        raise ScenarioError(f"--set {where}: parent is not a mapping")
    if part not in node or node[part] is None:
        if not create:
            raise ScenarioError(f"--set {where}: no such field")
        node[part] = {}
    return node[part]
