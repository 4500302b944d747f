"""A small KQL lexer: enough to find top-level `let` bindings and to prove a rewrite kept the query's shape.

It knows every string-literal form Kusto has (quoted, verbatim @'..', obfuscated h'..', multi-line ```..```)
and `//` comments, so a `;` or `let` inside a string or comment is never mistaken for structure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>//[^\n]*)
  | (?P<string>
        [hH]?@'(?:[^']|'')*'        # verbatim: '' is a quote, no escapes
      | [hH]?@"(?:[^"]|"")*"
      | [hH]?```.*?```              # multi-line
      | [hH]?~~~.*?~~~
      | [hH]?'(?:[^'\\\n]|\\.)*'    # quoted with backslash escapes, single line
      | [hH]?"(?:[^"\\\n]|\\.)*"
    )
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-zA-Z]*)
  | (?P<ident>[A-Za-z_$][A-Za-z0-9_$]*(?:-[a-z]+)*)  # includes mv-expand, project-away
  | (?P<punct>==|!=|=~|!~|<=|>=|=>|\.\.|[-+*/%<>=!(){}\[\],;:.|@?~#])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    kind: str  # string | number | ident | punct | comment
    text: str
    start: int
    end: int


class KqlLexError(ValueError):
    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset


def tokenize(query: str, *, comments: bool = False) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if not match:
            raise KqlLexError(pos, f"unexpected character {query[pos]!r} at offset {pos}")
        kind = match.lastgroup or ""
        if kind != "ws" and (comments or kind != "comment"):
            tokens.append(Token(kind, match.group(), match.start(), match.end()))
        pos = match.end()
    return tokens


@dataclass(frozen=True)
class LetBinding:
    name: str
    value_start: int  # offsets of the bound expression in the query text
    value_end: int
    value_tokens: tuple[Token, ...]

    @property
    def is_array(self) -> bool:
        texts = [t.text.lower() for t in self.value_tokens[:3]]
        return bool(texts) and (texts[0] == "pack_array" or (texts[:1] == ["dynamic"] and texts[2:3] == ["["]))


def top_level_lets(query: str) -> dict[str, LetBinding]:
    """The `let Name = expr;` statements at the top level of the query, by name."""
    tokens = tokenize(query)
    bindings: dict[str, LetBinding] = {}
    depth = 0
    statement_start = True
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if (
            statement_start
            and depth == 0
            and tok.text == "let"
            and i + 2 < len(tokens)
            and tokens[i + 1].kind == "ident"
            and tokens[i + 2].text == "="
        ):
            j = i + 3
            inner = 0
            while j < len(tokens) and not (inner == 0 and tokens[j].text == ";"):
                inner += _depth_change(tokens[j])
                j += 1
            value = tuple(tokens[i + 3 : j])
            if value:
                bindings[tokens[i + 1].text] = LetBinding(tokens[i + 1].text, value[0].start, value[-1].end, value)
            i = j + 1
            statement_start = True
            continue
        depth += _depth_change(tok)
        statement_start = depth == 0 and tok.text == ";"
        i += 1
    return bindings


def _depth_change(tok: Token) -> int:
    if tok.kind != "punct":
        return 0
    return 1 if tok.text in "([{" else -1 if tok.text in ")]}" else 0


def string_literal(value: str) -> str:
    """A double-quoted KQL string literal holding exactly `value` (data, never KQL)."""
    out = ['"']
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ch in "\x7f\u2028\u2029":
            raise ValueError(f"control character U+{ord(ch):04X} is not allowed in a parameter value")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def string_value(token: str) -> str:
    """The value a string token of `tokenize` holds (any literal form): the inverse of string_literal."""
    text = token.lstrip("hH")
    if text.startswith("@"):
        quote = text[1]
        return text[2:-1].replace(quote * 2, quote)
    if text.startswith("```"):
        return text[3:-3]
    out: list[str] = []
    body = iter(text[1:-1])
    escapes = {"n": "\n", "t": "\t", "r": "\r"}
    for ch in body:
        out.append(escapes.get(nxt := next(body, ""), nxt) if ch == "\\" else ch)
    return "".join(out)
