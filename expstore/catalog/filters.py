"""The search filter and order-by language: MLflow's `search_runs` syntax plus OR and parentheses.

A hand-written recursive-descent parser over this grammar (keywords are case-insensitive)::

    filter      := [disjunction] END
    disjunction := conjunction ("OR" conjunction)*
    conjunction := primary ("AND" primary)*
    primary     := "(" disjunction ")" | comparison
    comparison  := identifier ( OPERATOR value
                              | ["NOT"] ("LIKE" | "ILIKE") STRING
                              | ["NOT"] "IN" "(" value ("," value)* ")"
                              | "IS" ["NOT"] "NULL" )
    identifier  := part ("." part)*          (first part: WORD or BACKQUOTED; later ones also STRING)
    value       := NUMBER | STRING
    order_item  := identifier ["ASC" | "DESC"]
    OPERATOR    := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    STRING      := '...' | "..." (a doubled quote stands for itself)     BACKQUOTED := `...`

An identifier is an entity and a key (``metrics.loss``, ``params.optimizer.lr``, ``tags."a b"``)
or a bare run attribute (``status``, ``attributes.status``). Nothing here builds SQL: the
parsed conditions carry their values, which `query` binds as parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

__all__ = ["ATTRIBUTES", "And", "Condition", "Field", "Node", "Or", "OrderItem", "parse_filter", "parse_order_by"]

ATTRIBUTES = ("run_id", "name", "url", "status", "start_time", "end_time", "duration_seconds")
_ENTITIES = {
    "metric": "metrics", "metrics": "metrics",
    "param": "params", "params": "params", "parameter": "params", "parameters": "params",
    "tag": "tags", "tags": "tags",
    "attribute": "attributes", "attributes": "attributes", "attr": "attributes", "run": "attributes",
}
_OPERATORS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w.]))
  | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<backquoted>`(?:[^`]|``)*`)
  | (?P<operator><=|>=|!=|<>|==|=|<|>)
  | (?P<punct>[().,])
  | (?P<word>[^\W\d]\w*)
""", re.VERBOSE)
_SHOWN = 40  # characters of a bad token shown in an error


@dataclass(frozen=True)
class Field:
    """What a condition or an order item looks at: ``kind`` is metrics, params, tags or attributes."""

    kind: str
    key: str


@dataclass(frozen=True)
class Condition:
    """``field op value``: op is one of = != < <= > >= LIKE ILIKE NOT LIKE NOT ILIKE IN NOT IN IS NULL IS NOT NULL."""

    field: Field
    op: str
    value: float | str | tuple[float | str, ...] | None
    position: int


@dataclass(frozen=True)
class And:
    """All of `items` hold."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """Any of `items` holds."""

    items: tuple[Node, ...]


Node = Union[Condition, And, Or]


@dataclass(frozen=True)
class OrderItem:
    """One order-by term: a field, ascending or not (NULLs always last)."""

    field: Field
    ascending: bool


@dataclass(frozen=True)
class _Token:
    kind: str  # number string backquoted operator punct word end
    text: str
    position: int


def _tokens(text: str, what: str) -> list[_Token]:
    """The tokens of `text`; `ValueError` naming the position of the first character that starts none."""
    found, at = [], 0
    while at < len(text):
        m = _TOKEN.match(text, at)
        if m is None:
            quote = text[at] in "'\"`"
            expected = f"a closing {text[at]}" if quote else "a name, number, quoted string, operator or parenthesis"
            raise ValueError(f"invalid {what} at position {at}: expected {expected}, got {text[at:at + _SHOWN]!r}")
        if m.lastgroup != "space":
            found.append(_Token(m.lastgroup, m.group(), at))  # type: ignore[arg-type]
        at = m.end()
    found.append(_Token("end", "", len(text)))
    return found


def _unquote(text: str) -> str:
    """The content of a quoted token, a doubled quote standing for one."""
    quote = text[0]
    return text[1:-1].replace(quote * 2, quote)


MAX_DEPTH = 100  # nested parentheses a filter may have (each is a level of recursion here and in SQL)


class _Parser:
    """Recursive descent over the tokens of one filter or order-by text (the grammar is the module docstring)."""

    def __init__(self, text: str, what: str):
        self.what = what
        self.tokens = _tokens(text, what)
        self.at = 0
        self.depth = 0  # parentheses open at the current token

    @property
    def token(self) -> _Token:
        return self.tokens[self.at]

    def fail(self, expected: str, token: _Token | None = None) -> ValueError:
        """The error for `token` (default: the current one) where `expected` should be."""
        token = token or self.token
        got = "the end of the text" if token.kind == "end" else repr(token.text[:_SHOWN])
        return ValueError(f"invalid {self.what} at position {token.position}: expected {expected}, got {got}")

    def keyword(self, *words: str) -> str | None:
        """Consume the current token if it is one of the keywords `words` (any case); return it upper-cased."""
        token = self.token
        if token.kind == "word" and token.text.upper() in words:
            self.at += 1
            return token.text.upper()
        return None

    def punct(self, char: str) -> bool:
        """Consume the current token if it is the punctuation `char`."""
        if self.token.kind == "punct" and self.token.text == char:
            self.at += 1
            return True
        return False

    def expect_end(self) -> None:
        if self.token.kind != "end":
            raise self.fail("AND, OR, ')' or the end of the filter" if self.what == "filter" else "',' or the end")

    # ---- filter ---------------------------------------------------------------------------------

    def disjunction(self) -> Node:
        items = [self.conjunction()]
        while self.keyword("OR"):
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self) -> Node:
        items = [self.primary()]
        while self.keyword("AND"):
            items.append(self.primary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def primary(self) -> Node:
        opening = self.token
        if self.punct("("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"at most {MAX_DEPTH} nested parentheses", opening)
            node = self.disjunction()
            self.depth -= 1
            if not self.punct(")"):
                raise self.fail(f"')' to close the '(' at position {opening.position}, or AND / OR")
            return node
        return self.comparison()

    def comparison(self) -> Condition:
        start = self.token.position
        field = self.identifier()
        token = self.token
        if token.kind == "operator":
            self.at += 1
            return Condition(field, _OPERATORS[token.text], self.value(), start)
        negated = self.keyword("NOT")
        word = self.keyword("LIKE", "ILIKE", "IN")
        if word in ("LIKE", "ILIKE"):
            pattern = self.token
            if pattern.kind != "string":
                raise self.fail(f"a quoted pattern after {word}")
            self.at += 1
            return Condition(field, f"NOT {word}" if negated else word, _unquote(pattern.text), start)
        if word == "IN":
            if not self.punct("("):
                raise self.fail("'(' after IN")
            values = [self.value()]
            while self.punct(","):
                values.append(self.value())
            if not self.punct(")"):
                raise self.fail("',' or ')' in the IN list")
            return Condition(field, "NOT IN" if negated else "IN", tuple(values), start)
        if negated:
            raise self.fail("LIKE, ILIKE or IN after NOT")
        if self.keyword("IS"):
            negated = self.keyword("NOT")
            if not self.keyword("NULL"):
                raise self.fail("NULL after IS" + ("" if negated else " (or IS NOT NULL)"))
            return Condition(field, "IS NOT NULL" if negated else "IS NULL", None, start)
        raise self.fail("a comparison operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, IS)")

    def value(self) -> float | str:
        token = self.token
        if token.kind == "number":
            self.at += 1
            return float(token.text)
        if token.kind == "string":
            self.at += 1
            return _unquote(token.text)
        raise self.fail("a number or a quoted string")

    # ---- identifiers and order-by ----------------------------------------------------------------

    def identifier(self) -> Field:
        first = self.token
        if first.kind not in ("word", "backquoted"):
            raise self.fail("a name such as metrics.loss, params.lr, tags.x or status")
        self.at += 1
        parts = [first.text if first.kind == "word" else _unquote(first.text)]
        while self.token.kind == "punct" and self.token.text == ".":
            self.at += 1
            part = self.token
            if part.kind not in ("word", "backquoted", "string", "number"):
                raise self.fail("a name after '.'")
            self.at += 1
            parts.append(_unquote(part.text) if part.kind in ("backquoted", "string") else part.text)
        if len(parts) == 1:
            kind, key = "attributes", parts[0]
        else:
            kind = _ENTITIES.get(parts[0].lower())
            if kind is None:
                raise self.fail("an entity type: metrics, params, tags or attributes", first)
            key = ".".join(parts[1:])
        if kind == "attributes" and key.lower() not in ATTRIBUTES:
            raise self.fail(f"a run attribute ({', '.join(ATTRIBUTES)}) or metrics./params./tags.<name>", first)
        return Field(kind, key.lower() if kind == "attributes" else key)

    def order_item(self) -> OrderItem:
        field = self.identifier()
        direction = self.keyword("ASC", "DESC")
        if self.token.kind != "end":
            raise self.fail("ASC, DESC or the end of the order-by term")
        return OrderItem(field, direction != "DESC")


def parse_filter(text: str | None) -> Node | None:
    """The condition tree of a filter (None for no filter or a blank one); `ValueError` naming the position."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"filter must be a str, got {type(text).__name__}")
    parser = _Parser(text, "filter")
    if parser.token.kind == "end":
        return None
    node = parser.disjunction()
    parser.expect_end()
    return node


def parse_order_by(items: list[str] | tuple[str, ...] | str | None) -> list[OrderItem]:
    """The order-by terms (``["metrics.loss", "start_time DESC"]``); `ValueError` naming the term and position."""
    if items is None:
        return []
    if isinstance(items, str):
        items = [items]
    parsed = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"order_by terms must be str, got {type(item).__name__} {item!r:.80}")
        try:
            parsed.append(_Parser(item, "order_by term").order_item())
        except ValueError as exc:
            raise ValueError(f"{exc} (in order_by term {item!r:.200})") from None
    return parsed
