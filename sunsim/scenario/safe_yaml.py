"""YAML read safely: the safe loader, refusing duplicate keys, deep nesting, alias bombs and huge
files, with errors that name the file (a scenario, a sweep, a run's saved scenario).

Every YAML sunsim reads comes through here, so a hostile file is refused the same way wherever it
is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sunsim.scenario.limits import ScenarioError

#: Limits on a YAML document (a scenario or sweep is a few KiB, a few levels deep, a few hundred
#: nodes): a larger file (the pure-Python scanner takes ~2 s per MiB), deeper nesting (Python's
#: recursion limit) or aliases expanding to more nodes ("billion laughs": a few lines that expand
#: to 10^9) is refused before it is built.
MAX_YAML_BYTES = 2**20
MAX_YAML_DEPTH = 100
MAX_YAML_NODES = 100_000


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error (not "last one wins"),
    and a document nested deeper than :data:`MAX_YAML_DEPTH` or expanding (aliases counted as
    often as they are used) to more than :data:`MAX_YAML_NODES` nodes is refused while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0  # nodes so far, an alias counting as the whole subtree it names
        self._sizes: dict[int, int] = {}  # id(node) -> expanded size, once the node is complete

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:  # (an undefined alias is reported by the base class)
                if id(node) not in self._sizes:
                    raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} refers to itself "
                                                      "(a recursive structure)", event.start_mark)
                self._count(self._sizes[id(node)], event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                                              self.peek_event().start_mark)
        before = self._expanded
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1, node.start_mark)
        self._sizes[id(node)] = self._expanded - before
        return node

    def _count(self, n: int, mark: Any) -> None:
        self._expanded += n
        if self._expanded > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(None, None, f"aliases expand the document to more than "
                                              f"{MAX_YAML_NODES:,} values; write it out without aliases", mark)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys, deep nesting and alias bombs (a ``YAMLError``)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping (a scenario, a sweep), with errors that say which file."""
    try:
        with path.open("rb") as f:  # at most MAX_YAML_BYTES + 1: /dev/zero or a huge file is not read whole
            raw = f.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ScenarioError(f"{what} {str(path)!r} is larger than {MAX_YAML_BYTES // 2**20} MiB; not a {what} file")
    try:
        data = safe_load_unique(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ScenarioError(f"{what} {str(path)!r} is not a UTF-8 text file") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{what} {str(path)!r} is not valid YAML: {exc}") from None
    except ValueError as exc:  # an integer of more than 4300 digits, a date such as 2023-02-30
        raise ScenarioError(f"{what} {str(path)!r} holds a value YAML cannot read: {value_error_text(exc)}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{what} {str(path)!r}: the file must hold a mapping at the top level")
    return data


def value_error_text(exc: ValueError) -> str:
    """int()'s message ends with advice on sys.set_int_max_str_digits, which is not the user's to take."""
    return str(exc).split("; use sys.", 1)[0]
