"""Strict YAML reading for every config file: no duplicate keys, no alias bombs, nothing constructed but data.

PyYAML's safe loader merges a key written twice (the second `bp:` under `variants:` silently replaces
the first, so a run labelled bp could train another rule) and expands aliases without limit (a few
lines of nested aliases stand for millions of nodes, which a message or a dump then writes out). This
loader refuses both, naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_NODES = (
    100_000  # nodes of the document with every alias expanded; real configs have a few hundred
)
MAX_BYTES = 16 * 2**20  # real config files are a few KB


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with a repeated key."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # an unhashable key: the base constructor reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class _Recursive(Exception):
    """A node that contains itself through an alias (`a: &x [*x]`)."""


def _expanded_size(node: yaml.Node, memo: dict[int, int], open_: set[int]) -> int:
    """Nodes under `node` with aliases expanded (an alias is the same node object, so memoised).
    `open_`: the nodes being counted; meeting one again is a recursive structure, which no config
    needs and which would recurse without end in whatever prints or compares it."""
    if id(node) in open_:
        raise _Recursive(node.start_mark.line + 1)
    if id(node) in memo:
        return memo[id(node)]
    open_.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo, open_) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(
            _expanded_size(k, memo, open_) + _expanded_size(v, memo, open_) for k, v in node.value
        )
    else:
        size = 1
    open_.discard(id(node))
    memo[id(node)] = size
    return size


def loads(text: str, source: str = "<text>") -> Any:
    """The YAML document `text` as plain data; ValueError naming `source` for bad YAML, a repeated key
    or a document that expands to more than MAX_NODES nodes."""
    try:
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            try:
                size = _expanded_size(node, {}, set())
            except _Recursive as where:
                raise ValueError(
                    f"{source}: line {where.args[0]}: a YAML alias refers to a node that contains "
                    "it (a recursive structure); write the values out"
                ) from None
            if size > MAX_NODES:
                raise ValueError(
                    f"{source}: the YAML expands to more than {MAX_NODES} nodes through its "
                    "aliases (an alias bomb?); write the values out"
                )
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise ValueError(f"{source} is not readable YAML: {_short(error)}") from None


def load(path: Path | str) -> Any:
    """The YAML file `path` as plain data (see `loads`); FileNotFoundError when it does not exist."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config file {path} is a folder; give a YAML file")
    if not path.exists():
        raise FileNotFoundError(f"config file {path} not found")
    if not path.is_file():  # a device or a pipe would be read without end
        raise ValueError(f"config file {path} is not a regular file; give a YAML file")
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ValueError(f"config file {path} is over {MAX_BYTES // 2**20} MiB; no config is")
        text = raw.decode()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"config file {path} is not readable: {error}") from None
    return loads(text, f"config file {path}")


def _short(error: yaml.YAMLError) -> str:
    """The parser's message in one line of at most 300 characters (a hostile file cannot flood the terminal)."""
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."
