"""Refuse YAML that would make a loader explode before it is built into objects.

An alias bomb (a few lines of anchors referring to anchors) expands to billions of nodes and ran `validate` out
of memory after 41 s; deeply nested brackets overflow the Python constructor's recursion. So the event stream is
checked first - it is flat and fast (libyaml's parser when PyYAML has it) - counting what aliases expand to, and
such a file gets a located error instead. Ordinary aliases stay allowed: yaml.safe_dump writes them for any value
used twice.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 50  # a Sentinel rule nests about 5 deep; far below the constructor's recursion limit
MAX_NODES = 200_000  # nodes after expanding aliases; a 1 MB rule file (the loader's limit) has far fewer
_PARSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlRefused(Exception):
    """The text expands too far (aliases) or nests too deep; `line` is 1-based when known."""

    def __init__(self, reason: str, line: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def check_shape(text: str, parser: Any = None) -> None:
    """Raise YamlRefused when aliases expand past MAX_NODES or nesting passes MAX_DEPTH; yaml.YAMLError for a
    syntax error. `parser`: a loader class (default libyaml's when available; validate passes PyYAML's own,
    whose syntax messages it reports)."""
    sizes: dict[str, int] = {}  # anchor -> how many nodes it stands for, expanded
    open_sizes: list[tuple[str | None, int]] = []  # (anchor, running total at its start) per open collection
    total = 0
    loader = (parser or _PARSER)(text)
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.AliasEvent):
                total += sizes.get(event.anchor or "", 1)
                if total > MAX_NODES:
                    raise YamlRefused(
                        f"YAML alias *{event.anchor} expands the document past {MAX_NODES:,} nodes (an alias bomb?)",
                        _line(event),
                    )
            elif isinstance(event, yaml.ScalarEvent):
                total += 1
                if event.anchor:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                total += 1
                open_sizes.append((event.anchor, total))
                if len(open_sizes) > MAX_DEPTH:
                    raise YamlRefused(f"YAML nested more than {MAX_DEPTH} levels deep", _line(event))
            elif isinstance(event, yaml.CollectionEndEvent) and open_sizes:
                anchor, started = open_sizes.pop()
                if anchor:
                    sizes[anchor] = total - started + 1
    except RecursionError:  # PyYAML's pure-Python scanner (no libyaml) recurses on flow brackets
        raise YamlRefused(f"YAML nested more than {MAX_DEPTH} levels deep", None) from None
    finally:
        loader.dispose()


def _line(event: yaml.Event) -> int | None:
    return event.start_mark.line + 1 if event.start_mark is not None else None


def safe_load(text: str) -> Any:
    """yaml.safe_load (libyaml when available) after check_shape. A scalar YAML resolves but cannot build (the
    date 2026-13-45, a timestamp past year 9999) is a YamlRefused too, not a ValueError from deep inside."""
    check_shape(text)
    try:
        return yaml.load(text, Loader=_PARSER)  # noqa: S506 - a safe loader
    except (ValueError, OverflowError) as exc:
        raise YamlRefused(f"a value YAML cannot read: {str(exc)[:200]}", bad_scalar_line(text)) from None


def bad_scalar_line(text: str) -> int | None:
    """The line of the first scalar that fails to build (error path only: the text is composed again)."""
    constructor = yaml.SafeLoader("")
    try:
        pending = [yaml.compose(text, Loader=_PARSER)]
        seen: set[int] = set()  # an alias inside its own anchor makes the node graph cyclic
        while pending:
            node = pending.pop(0)
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, yaml.ScalarNode):
                try:
                    constructor.construct_object(node)
                except (ValueError, OverflowError, yaml.YAMLError):
                    return int(node.start_mark.line) + 1
            elif isinstance(node, yaml.SequenceNode):
                pending.extend(node.value)
            elif isinstance(node, yaml.MappingNode):
                pending.extend(n for pair in node.value for n in pair)
    except yaml.YAMLError:
        return None
    finally:
        constructor.dispose()
    return None
