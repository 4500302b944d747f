"""Where each line of a JSON-lines or CSV file is, from one pass over its bytes, and chosen lines read back: what
lets `hunt` read a query's unnamed columns late, for the rows it returns only (latecolumns.py).

The pass reads 16 MiB at a time and counts line breaks in place (bytes.count at C speed, ~0.7 s per GB on these
machines; no copy of a block, flat memory), noting where each stretch of about 32 KiB of whole lines starts and
which line begins it. A line is then found again by reading its stretch only: 12,000 returned rows of a 1 GB
file read ~400 MB at most, not the whole file. The pass does not tell blank lines apart: the caller relies on line N holding
record N only when DuckDB read as many records as there are lines (with format='newline_delimited' a line holds
at most one record, so equal counts leave no blank line).
"""

from __future__ import annotations

import base64
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

_BLOCK = 1 << 24
_STRETCH = 1 << 15


@dataclass(frozen=True)
class Lines:
    """Stretch i holds the file's bytes from offsets[i] to offsets[i + 1] (the last to `size`), whole lines,
    the first of them line firsts[i] (0-based); `count` lines in all, the last `blank_tail` of them blank (an
    editor's or a tool's extra line breaks at the end, which DuckDB skips)."""

    offsets: array[int]
    firsts: array[int]
    size: int
    count: int
    blank_tail: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "offsets": base64.b64encode(self.offsets.tobytes()).decode(),
            "firsts": base64.b64encode(self.firsts.tobytes()).decode(),
            "size": self.size,
            "count": self.count,
            "blank_tail": self.blank_tail,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Lines:
        offsets, firsts = array("q"), array("q")
        offsets.frombytes(base64.b64decode(data["offsets"]))
        firsts.frombytes(base64.b64decode(data["firsts"]))
        if len(offsets) != len(firsts):
            raise ValueError("offsets and firsts differ in length")
        return cls(offsets, firsts, int(data["size"]), int(data["count"]), int(data.get("blank_tail", 0)))


def index(path: Path) -> Lines:
    """The file's lines, stretch by stretch (raises OSError)."""
    offsets, firsts = array("q"), array("q")
    base = line = 0  # base: the file offset of the current chunk
    carried = 0  # bytes of a line the last chunk cut, before this chunk
    with path.open("rb") as handle:
        while chunk := handle.read(_BLOCK):
            last = chunk.rfind(b"\n")
            if last < 0:
                carried += len(chunk)
                base += len(chunk)
                continue
            start = 0
            while start <= last:
                end = chunk.find(b"\n", min(start + _STRETCH, last))
                offsets.append(base + start - (carried if start == 0 else 0))
                firsts.append(line)
                line += chunk.count(b"\n", start, end + 1)
                start = end + 1
            carried = len(chunk) - (last + 1)
            base += len(chunk)
        if carried:  # the last line has no line break
            offsets.append(base - carried)
            firsts.append(line)
            line += 1
        return Lines(offsets, firsts, base, line, _blank_tail(handle, base))


def _blank_tail(handle: BinaryIO, size: int) -> int:
    """How many of the file's last lines are blank, counted within its last 64 KiB (a longer blank tail is
    undercounted: the caller's record count then differs, and it does not rely on the lines)."""
    handle.seek(max(0, size - (1 << 16)))
    lines = handle.read().split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the break after the last line
    if size > 1 << 16:
        lines = lines[1:]  # the first may be the end of a longer line
    blank = 0
    for text in reversed(lines):
        if text.strip(b" \t\r"):
            break
        blank += 1
    return blank


def lines_at(path: Path, found: Lines, wanted: Iterable[int]) -> dict[int, bytes]:
    """Line number (0-based) -> its bytes without the line break, for each of `wanted` below found.count; only
    the stretches that hold one are read (raises OSError)."""
    out: dict[int, bytes] = {}
    targets = sorted(t for t in set(wanted) if 0 <= t < found.count)
    position = 0
    with path.open("rb") as handle:
        while position < len(targets):
            stretch = bisect_right(found.firsts, targets[position]) - 1
            begin = found.offsets[stretch]
            end = found.offsets[stretch + 1] if stretch + 1 < len(found.offsets) else found.size
            handle.seek(begin)
            data = handle.read(end - begin)
            line, at = found.firsts[stretch], 0
            limit = found.firsts[stretch + 1] if stretch + 1 < len(found.firsts) else found.count
            while position < len(targets) and targets[position] < limit:
                while line < targets[position]:
                    at = data.index(b"\n", at) + 1
                    line += 1
                stop = data.find(b"\n", at)
                out[line] = data[at : stop if stop >= 0 else len(data)]
                position += 1
    return out
