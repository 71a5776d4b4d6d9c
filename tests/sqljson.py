"""Trino's ``json_exists(json, path)`` for DuckDB: the SQL/JSON path subset the statements use,
read from the path text itself (written independently of ``detector.core.requestjson``, which writes
that text, so the differential tests compare two implementations).

Lax mode, as Trino's default: a member accessor on an array applies to each element, a missing
member gives nothing, ``[*]`` on a non-array gives the item itself. Comparisons between values
of different types are unknown (false); ``.double()`` of a non-number is an error (false).
Input that is not JSON makes ``json_exists`` false (``FALSE ON ERROR``); SQL NULL gives NULL.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?[0-9]+(?:\.[0-9]+)?)|'
    r"(?P<op>==|!=|<=|>=|<|>|&&|\|\||\[\*\]|\.double\(\)|[()$@.?])|(?P<word>[A-Za-z_]+))"
)


class _Error(Exception):
    pass


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"bad path at {text[pos : pos + 20]!r}")
        pos = m.end()
        if m["str"] is not None:
            out.append(("str", json.loads(m["str"])))
        elif m["num"] is not None:
            out.append(("num", float(m["num"])))
        elif m["op"] is not None:
            out.append(("op", m["op"]))
        else:
            out.append(("word", m["word"]))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, kind: str, value: Any = None) -> Any:
        tok = self.peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            raise ValueError(f"expected {value or kind}, got {tok}")
        self.i += 1
        return tok[1]

    def accept(self, kind: str, value: Any = None) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == kind and (value is None or tok[1] == value):
            self.i += 1
            return True
        return False

    def path(self) -> Any:
        self.take("word", "lax")
        self.take("op", "$")
        return ("path", "$", self.steps())

    def steps(self) -> list[Any]:
        steps: list[Any] = []
        while True:
            if self.accept("op", "."):
                tok = self.peek()
                if tok is not None and tok[0] == "str":
                    self.i += 1
                    steps.append(("member", tok[1]))
                else:
                    steps.append(("member", self.take("word")))
            elif self.accept("op", "[*]"):
                steps.append(("all",))
            elif self.accept("op", "?"):
                self.take("op", "(")
                steps.append(("filter", self.disjunction()))
                self.take("op", ")")
            else:
                return steps

    def disjunction(self) -> Any:
        parts = [self.conjunction()]
        while self.accept("op", "||"):
            parts.append(self.conjunction())
        return ("or", parts)

    def conjunction(self) -> Any:
        parts = [self.unary()]
        while self.accept("op", "&&"):
            parts.append(self.unary())
        return ("and", parts)

    def unary(self) -> Any:
        if self.accept("op", "("):
            inner = self.disjunction()
            self.take("op", ")")
            return inner
        if self.accept("word", "exists"):
            self.take("op", "(")
            self.take("op", "@")
            steps = self.steps()
            self.take("op", ")")
            return ("exists", steps)
        self.take("op", "@")
        double = self.accept("op", ".double()")
        if self.accept("word", "starts"):
            self.take("word", "with")
            return ("starts", self.take("str"))
        op = self.take("op")
        return ("cmp", double, op, self.literal())

    def literal(self) -> Any:
        kind, value = self.peek() or ("", None)
        self.i += 1
        if kind in ("str", "num"):
            return value
        if kind == "word" and value in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[value]
        raise ValueError(f"bad literal {value!r}")


def _run(steps: list[Any], items: list[Any]) -> list[Any]:
    for step in steps:
        out: list[Any] = []
        for item in items:
            if step[0] == "member":
                for obj in item if isinstance(item, list) else [item]:
                    if isinstance(obj, dict) and step[1] in obj:
                        out.append(obj[step[1]])
            elif step[0] == "all":
                out.extend(item if isinstance(item, list) else [item])
            elif _true(step[1], item):
                out.append(item)
        items = out
    return items


def _same_type(a: Any, b: Any) -> bool:
    def kind(v: Any) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, (int, float)):
            return "num"
        return "str" if isinstance(v, str) else "other"

    return kind(a) == kind(b)


def _true(pred: Any, item: Any) -> bool:
    kind = pred[0]
    if kind == "or":
        return any(_true(p, item) for p in pred[1])
    if kind == "and":
        return all(_true(p, item) for p in pred[1])
    if kind == "exists":
        return bool(_run(pred[1], [item]))
    values = item if isinstance(item, list) else [item]  # lax: comparisons unwrap arrays
    if kind == "starts":
        return any(isinstance(v, str) and v.startswith(pred[1]) for v in values)
    _, double, op, lit = pred
    for v in values:
        if double:
            try:
                if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                    raise _Error
                v = float(v)
            except (ValueError, _Error):
                continue
        if not _same_type(v, lit):
            if op == "!=" and lit is None:
                return True  # anything but null is != null
            continue
        if (
            (op == "==" and v == lit)
            or (op == "!=" and v != lit)
            or (op == "<" and v < lit)
            or (op == ">" and v > lit)
        ):
            return True
    return False


def json_exists(text: str | None, path: str | None) -> bool | None:
    if text is None or path is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    parser = _Parser(path)
    tree = parser.path()
    if parser.peek() is not None:
        raise ValueError(f"unparsed path text in {path!r}")
    return bool(_run(tree[2], [doc]))
