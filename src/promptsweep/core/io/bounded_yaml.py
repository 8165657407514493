"""A safe YAML loader with bounds: alias expansion and nesting depth are limited.

``yaml.safe_load`` refuses Python tags but not a "billion laughs" file: nine lines of
anchors and aliases compose to a graph that is small in memory and astronomically large
once anything walks it as a tree (validating, hashing or dumping it). This loader checks
the composed graph before any value is constructed and refuses:

* aliases that expand the document by more than ``MAX_ALIAS_EXPANSION`` nodes beyond the
  nodes written in the file (ordinary reuse, e.g. ``<<: *defaults`` a few dozen times, is fine);
* aliases that expand it by more than ``MAX_ALIAS_EXPANSION_CHARS`` characters of scalar text
  beyond what the file spells out: one 200 KB string aliased 9 000 times is only 9 000 nodes,
  but 1.8 GB once dumped, hashed or written to ``config.json``;
* an alias that contains itself (a recursive structure);
* nesting deeper than ``MAX_DEPTH`` levels.

The check is linear in the size of the file: expanded sizes are summed over the graph with
memoisation, so the bomb is measured without being expanded.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_ALIAS_EXPANSION = 10_000
MAX_ALIAS_EXPANSION_CHARS = 1_000_000
MAX_DEPTH = 100


class YAMLBoundsError(yaml.YAMLError):
    """The document is valid YAML but exceeds a bound; the message says which and why."""


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _chars(node: Node) -> int:
    return len(node.value) if isinstance(node, ScalarNode) else 0


def check_node_graph(
    root: Node,
    *,
    max_expansion: int = MAX_ALIAS_EXPANSION,
    max_depth: int = MAX_DEPTH,
    max_expansion_chars: int = MAX_ALIAS_EXPANSION_CHARS,
) -> None:
    """Raise ``YAMLBoundsError`` when the composed document is a bomb (in values or in
    characters), recursive or too deep."""
    unique: set[int] = set()
    spelled_chars = 0
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in unique:
            continue
        unique.add(id(node))
        spelled_chars += _chars(node)
        pending.extend(_children(node))
    limit = len(unique) + max_expansion
    char_limit = spelled_chars + max_expansion_chars
    chars: dict[int, int] = {}
    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node)
            size = 1 + sum(sizes[id(child)] for child in children)
            text = _chars(node) + sum(chars[id(child)] for child in children)
            height = 1 + max((heights[id(child)] for child in children), default=0)
            if text > char_limit:
                raise YAMLBoundsError(
                    f"aliases (*name) expand this document to more than {char_limit} characters, "
                    f"{max_expansion_chars} more than it spells out (a large value repeated by aliases?); "
                    "write the repeated values out"
                )
            if size > limit:
                raise YAMLBoundsError(
                    f"aliases (*name) expand this document to more than {limit} values, "
                    f"{max_expansion} more than it spells out (an alias bomb?); promptsweep allows "
                    "aliases only up to that: write the repeated values out"
                )
            if height > max_depth:
                raise YAMLBoundsError(
                    f"values are nested more than {max_depth} levels deep; flatten the structure"
                )
            sizes[key], heights[key], chars[key] = size, height, text
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YAMLBoundsError(
                "an alias (*name) refers to a value that contains it (a recursive structure)"
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python tags) that checks each composed document's bounds."""

    def compose_document(self) -> Node | None:
        node: Node | None = super().compose_document()
        if node is not None:
            check_node_graph(node)
        return node


def load_bounded(text: str) -> Any:
    """Like ``yaml.safe_load`` with the bounds above. Deep nesting that the composer cannot
    even reach (``RecursionError``) is reported as ``YAMLBoundsError`` too."""
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise YAMLBoundsError(
            f"values are nested more than {MAX_DEPTH} levels deep; flatten the structure"
        ) from None
    finally:
        loader.dispose()


def nesting_depth_exceeds(data: Any, max_depth: int = MAX_DEPTH) -> bool:
    """Whether parsed data (e.g. from JSON) nests deeper than ``max_depth`` containers."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
