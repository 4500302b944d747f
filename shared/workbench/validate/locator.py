"""The YAML locator: offsets in a rule's query -> line and column in its file (block and inline scalars)."""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import yaml


def query_locator(text: str, node: yaml.ScalarNode, value: str, key_col: int = 0) -> Callable[[int], tuple[int, int]]:
    """Map an offset in a scalar's value to its (line, column) in the file, both 1-based.

    Exact for block scalars (`|`, `|-`, `>`, ...) and for single-line plain or quoted scalars; otherwise (multi-line
    flow scalars, escapes) the scalar's start.
    """
    start = (node.start_mark.line + 1, node.start_mark.column + 1)
    pieces = None
    if node.style in ("|", ">"):
        pieces = _block_pieces(text, node, value, key_col)
    elif node.start_mark.line == node.end_mark.line:
        pieces = _inline_pieces(text, node, value)
    if not pieces:
        return lambda offset: start
    starts = [p[0] for p in pieces]

    def locate(offset: int) -> tuple[int, int]:
        offset = max(0, min(offset, len(value) - 1 if value else 0))
        i = max(0, bisect.bisect_right(starts, offset) - 1)
        piece_start, line, col, length = pieces[i]
        return line + 1, col + 1 + max(0, min(offset - piece_start, length - 1))

    return locate


_LINE_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")

_BLOCK_HEADER = re.compile(r"[|>]([1-9][+-]?|[+-][1-9]?)?")


def _block_pieces(text: str, node: yaml.ScalarNode, value: str, key_col: int) -> list[tuple[int, int, int, int]]:
    """(value offset, file line, file column, length) of each content line of a block scalar, as PyYAML folds it;
    [] when the reconstruction does not reproduce the value."""
    lines = _LINE_BREAK.split(text)
    header_line = node.start_mark.line
    header = _BLOCK_HEADER.match(lines[header_line], node.start_mark.column) if header_line < len(lines) else None
    if header is None:
        return []
    digits = [ch for ch in header.group(1) or "" if ch.isdigit()]
    indent = key_col + int(digits[0]) if digits else None
    folded = node.style == ">"
    body = lines[header_line + 1 :]
    if indent is None:
        first = next((ln for ln in body if ln.strip()), "")
        indent = len(first) - len(first.lstrip(" "))
    if indent <= key_col and not digits:
        return []
    pieces: list[tuple[int, int, int, int]] = []
    out: list[str] = []
    length = 0
    breaks = 0
    previous_leading_text: bool | None = None
    for i, line in enumerate(body):
        spaces = len(line) - len(line.lstrip(" "))
        if spaces == len(line) and spaces <= indent:
            breaks += 1  # an empty line
            continue
        if spaces < indent:
            break  # the block ended
        content = line[indent:]
        leading_text = content[:1] not in (" ", "\t")
        if previous_leading_text is None:
            joint = "\n" * breaks
        elif folded and previous_leading_text and leading_text:
            joint = " " if breaks == 0 else "\n" * breaks
        else:
            joint = "\n" * (1 + breaks)
        out.append(joint)
        length += len(joint)
        pieces.append((length, header_line + 1 + i, indent, len(content)))
        out.append(content)
        length += len(content)
        breaks = 0
        previous_leading_text = leading_text
    rebuilt = "".join(out)
    if not value.startswith(rebuilt) or value[len(rebuilt) :].strip("\n"):
        return []
    return pieces


def _inline_pieces(text: str, node: yaml.ScalarNode, value: str) -> list[tuple[int, int, int, int]]:
    line, col = node.start_mark.line, node.start_mark.column
    source = text[node.start_mark.index : node.end_mark.index]
    if node.style is None:  # plain
        return [(0, line, col, len(value))] if source.startswith(value) else []
    if node.style == "'" and "''" not in source and source[1:-1] == value:
        return [(0, line, col + 1, len(value))]
    if node.style == '"' and "\\" not in source and source[1:-1] == value:
        return [(0, line, col + 1, len(value))]
    return []


def _code_point_offset(text: str, utf16_offset: int) -> int:
    """Kusto.Language (JavaScript) counts UTF-16 code units; Python strings count code points."""
    if utf16_offset <= 0 or all(ord(ch) <= 0xFFFF for ch in text[:utf16_offset]):
        return utf16_offset
    units = 0
    for index, ch in enumerate(text):
        if units >= utf16_offset:
            return index
        units += 2 if ord(ch) > 0xFFFF else 1
    return len(text)
