"""Tests of a call's request JSON, declared once and run two ways: in Python over the parsed
request (``scan`` and the Lambda) and as SQL/JSON path text (Athena's ``json_exists``).

A test is a small tree (``Cond``): ``eq``/``prefix``/``lt``/``present`` on a dotted path,
``all_of``/``any_of``, ``some`` (one array element satisfies a whole condition: the same IAM
statement allows the action and the resource) and ``decoded`` (a string holding JSON, such as
an IAM policy document). Paths are lax, as in SQL/JSON's lax mode: an array met on the way is
looked into, so ``Rule.NoncurrentVersionExpiration.NoncurrentDays`` finds the value whether
``Rule`` is one object or a list of them.

Values are compared as text, the way a request reaches us in either schema version: v2 keeps
the JSON (``false``, ``-1``), v1's flattened ``unmapped`` map keeps text (``"false"``,
``"-1"``); so ``eq("egress", "false")`` matches both, and ``lt`` reads a number from either.

Requests are written by callers: nothing here can raise on their content. A request that is not
JSON, or nests deeper than ``MAX_DEPTH``, satisfies no test.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Union

# Nesting judged at all; deeper is no document (Python's parser stops near 1,000 levels).
MAX_DEPTH = 512
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
OPS = ("eq", "prefix", "lt", "present")


@dataclass(frozen=True)
class Test:
    path: str
    op: str
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_path(self.path)
        if self.op not in OPS:
            raise ValueError(f"unknown test {self.op!r}")
        if self.op == "lt" and (len(self.values) != 1 or not _NUMBER.fullmatch(self.values[0])):
            raise ValueError("lt takes one number")
        if self.op in ("eq", "prefix") and not self.values:
            raise ValueError(f"{self.op} takes at least one value")


@dataclass(frozen=True)
class All:
    parts: tuple[Cond, ...]


@dataclass(frozen=True)
class Any_:
    parts: tuple[Cond, ...]


@dataclass(frozen=True)
class Some:
    """Some object at ``path`` (each element, for a list) satisfies ``cond`` as a whole."""

    path: str
    cond: Cond

    def __post_init__(self) -> None:
        _check_path(self.path)
        if _has_decoded(self.cond):
            raise ValueError("decoded() must stay outside some()")


@dataclass(frozen=True)
class Decoded:
    """The string at ``path`` is JSON itself (a policy document): ``cond`` is judged on it.

    ``fold``: judged on the document in lower case, keys and values, so ``cond`` is written in
    lower case: IAM reads action names without regard to case (``KMS:Decrypt`` is
    ``kms:decrypt``), and a caller must not slip past a test by writing ``Kms:*``.
    """

    path: str
    cond: Cond
    fold: bool = False

    def __post_init__(self) -> None:
        _check_path(self.path)
        if _has_decoded(self.cond):
            raise ValueError("decoded() cannot nest")
        if self.fold and any(p != p.lower() for p in paths(self.cond)):
            raise ValueError("a folded document's paths are written in lower case")
        if self.fold and any(v != v.lower() for v in _values(self.cond)):
            raise ValueError("a folded document's values are written in lower case")


Cond = Union[Test, All, Any_, Some, Decoded]  # noqa: UP007 (a runtime alias)


def eq(path: str, *values: str) -> Test:
    return Test(path, "eq", values)


def prefix(path: str, *values: str) -> Test:
    return Test(path, "prefix", values)


def lt(path: str, number: int | float) -> Test:
    return Test(path, "lt", (str(number),))


def present(path: str) -> Test:
    return Test(path, "present")


def all_of(*parts: Cond) -> All:
    return All(parts)


def any_of(*parts: Cond) -> Any_:
    return Any_(parts)


def some(path: str, cond: Cond) -> Some:
    return Some(path, cond)


def decoded(path: str, cond: Cond, *, fold: bool = False) -> Decoded:
    return Decoded(path, cond, fold)


def _values(cond: Cond) -> list[str]:
    if isinstance(cond, Test):
        return list(cond.values)
    if isinstance(cond, (All, Any_)):
        return [v for part in cond.parts for v in _values(part)]
    return _values(cond.cond)


def _check_path(path: str) -> None:
    if not path or not all(_KEY.fullmatch(k) for k in path.split(".")):
        raise ValueError(f"request path {path!r}: dotted keys of letters, digits and _ only")


def _has_decoded(cond: Cond) -> bool:
    if isinstance(cond, Decoded):
        return True
    if isinstance(cond, (All, Any_)):
        return any(_has_decoded(p) for p in cond.parts)
    if isinstance(cond, Some):
        return _has_decoded(cond.cond)
    return False


def paths(cond: Cond) -> list[str]:
    """Every path the condition reads (for listings), outermost first."""
    if isinstance(cond, Test):
        return [cond.path]
    if isinstance(cond, (All, Any_)):
        return [p for part in cond.parts for p in paths(part)]
    return [cond.path] + [f"{cond.path}.{p}" for p in paths(cond.cond)]


def describe(cond: Cond) -> str:
    """One line for people (``detections`` listing, docs)."""
    if isinstance(cond, Test):
        if cond.op == "present":
            return f"{cond.path} present"
        if cond.op == "lt":
            return f"{cond.path} < {cond.values[0]}"
        word = "=" if cond.op == "eq" else "starts with"
        return f"{cond.path} {word} {' or '.join(repr(v) for v in cond.values)}"
    if isinstance(cond, All):
        return " and ".join(_wrap(p) for p in cond.parts)
    if isinstance(cond, Any_):
        return " or ".join(_wrap(p) for p in cond.parts)
    if isinstance(cond, Some):
        return f"some {cond.path}: ({describe(cond.cond)})"
    folded = ", in lower case" if cond.fold else ""
    return f"{cond.path} as JSON{folded}: ({describe(cond.cond)})"


def _wrap(cond: Cond) -> str:
    text = describe(cond)
    return f"({text})" if isinstance(cond, (All, Any_)) else text


# --- Python -----------------------------------------------------------------------------------


def parse(text: str | None) -> Any:
    """A request's JSON text as Python data; None when it is not JSON (or nests too deeply)."""
    if not text:
        return None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return doc if _depth_ok(doc) else None


def _depth_ok(doc: Any) -> bool:
    stack = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return True


def from_flattened(entries: Mapping[str, str | None], prefix_: str = "requestParameters") -> Any:
    """v1's flattened ``unmapped`` entries (``requestParameters.a.b`` -> text) as one document.

    A value holding a JSON array (how a list is written there) is parsed; AWS's own ``key[]``
    entries are comma-joined lists. Anything else stays text.
    """
    doc: dict[str, Any] = {}
    head = prefix_ + "."
    for key, value in entries.items():
        if not key.startswith(head) or value is None:
            continue
        parts = key[len(head) :].split(".")
        if parts[-1].endswith("[]"):
            parts[-1] = parts[-1][:-2]
            item: Any = value.split(",")
        elif value[:1] == "[":
            # A list written whole. An object never is (its keys are flattened): text that
            # starts with "{" is a string value, e.g. a policy document. The text is kept, as
            # SQL reads it: a document written as a JSON array is decoded from it.
            parsed = parse(value)
            item = value if not isinstance(parsed, list) else FlatList(parsed, value)
        else:
            item = value
        node = doc
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node.setdefault(parts[-1], item)
    return doc


class FlatList(list[Any]):
    """A list v1 wrote whole as JSON text at a flattened key, with that text."""

    def __init__(self, items: list[Any], text: str) -> None:
        super().__init__(items)
        self.text = text


def fold(doc: Any) -> Any:
    """``doc`` with every key and string in lower case: after parsing, so a JSON escape
    (``\u0041llow``) cannot keep a letter out of the fold."""
    if isinstance(doc, str):
        return doc.lower()
    if isinstance(doc, list):
        return [fold(v) for v in doc]
    if isinstance(doc, dict):
        out: dict[str, Any] = {}
        for k, v in doc.items():
            out.setdefault(k.lower(), fold(v))  # the first of keys equal but for case
        return out
    return doc


def _document(value: Any, folded: bool) -> Any:
    """The document a ``decoded`` test reads from ``value``: a string's JSON (a list v1 wrote
    whole, from its text), folded to lower case if asked; None for anything else."""
    raw = value.text if isinstance(value, FlatList) else value
    if not isinstance(raw, str):
        return None  # as SQL: json_extract_scalar reads only a string
    doc = parse(raw)
    return fold(doc) if folded and doc is not None else doc


def text(value: Any) -> str | None:
    """A JSON value as the text it is compared by (``false``, ``-1``, ``s``); None for null."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return None  # objects and arrays are not compared


def _number(value: Any) -> float | None:
    """A number, from a JSON number or from text SQL's ``double()``/``CAST`` reads as one
    (``"01"``, ``"1e0"``, ``".5"``); None otherwise, or when not finite."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _walk(node: Any, path: str, *, keep_lists: bool = False) -> Iterator[Any]:
    """The values at ``path`` (lax: arrays on the way and at the end are looked into);
    ``keep_lists``: a list v1 wrote whole is given as it is (its text is a document)."""
    current = [node]
    for key in path.split("."):
        nxt = []
        for item in current:
            for obj in item if isinstance(item, list) else [item]:
                if isinstance(obj, dict) and key in obj:
                    nxt.append(obj[key])
        current = nxt
    # Two levels, as SQL/JSON's lax mode looks into a list at the end of the path and again
    # into a list an item compared (or filtered) turns out to be.
    for value in current:
        if keep_lists and isinstance(value, FlatList):
            yield value
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, list):
                yield from item
            else:
                yield item


def holds(cond: Cond, doc: Any) -> bool:
    """Whether the parsed request ``doc`` satisfies ``cond`` (False for a non-document)."""
    if isinstance(cond, All):
        return all(holds(p, doc) for p in cond.parts)
    if isinstance(cond, Any_):
        return any(holds(p, doc) for p in cond.parts)
    if isinstance(cond, Some):
        return any(isinstance(v, dict) and holds(cond.cond, v) for v in _walk(doc, cond.path))
    if isinstance(cond, Decoded):
        for value in _walk(doc, cond.path, keep_lists=True):
            inner = _document(value, cond.fold)
            if isinstance(inner, (dict, list)) and holds(cond.cond, inner):
                return True
        return False
    values = list(_walk(doc, cond.path))
    if cond.op == "present":
        return any(v is not None for v in values)
    if cond.op == "lt":
        limit = float(cond.values[0])
        return any((n := _number(v)) is not None and n < limit for v in values)
    texts = [t for v in values if (t := text(v)) is not None]
    if cond.op == "eq":
        # A JSON number equals a number value by value (-1.0 is -1), as SQL's == does.
        numbers = [float(v) for v in cond.values if _NUMBER.fullmatch(v)]
        return any(t in cond.values for t in texts) or any(
            isinstance(v, (int, float)) and not isinstance(v, bool) and float(v) in numbers
            for v in values
        )
    return any(t.startswith(cond.values) for t in texts)


# --- SQL --------------------------------------------------------------------------------------
# Trino's SQL/JSON path (Athena engine 3): ``json_exists(json, 'lax $ ? (...)')``. The tests
# run the same text on DuckDB through an independent implementation of this subset.


def _quote_json(value: str) -> str:
    return json.dumps(value, ensure_ascii=True)


def _accessor(path: str) -> str:
    return "".join(f'."{k}"' for k in path.split("."))


def _leaf(cond: Test) -> str:
    """The filter on ``@`` (one value) of a test."""
    if cond.op == "present":
        return "@ != null"
    if cond.op == "lt":
        return f"@.double() < {cond.values[0]}"
    if cond.op == "prefix":
        return " || ".join(f"@ starts with {_quote_json(v)}" for v in cond.values)
    options = []
    for v in cond.values:
        options.append(f"@ == {_quote_json(v)}")
        if _NUMBER.fullmatch(v) or v in ("true", "false"):
            options.append(f"@ == {v}")
    return " || ".join(options)


def _folded(text: str) -> str:
    """SQL: the JSON text in lower case after parsing (escapes decoded, then folded), as
    ``fold`` does; null for text that is not JSON."""
    return f"lower(json_format(try(json_parse({text}))))"


def path_filter(cond: Cond) -> str:
    """``cond`` as a SQL/JSON path predicate on the current item ``@``."""
    if isinstance(cond, Test):
        return f"exists(@{_accessor(cond.path)}[*] ? ({_leaf(cond)}))"
    if isinstance(cond, All):
        return "(" + " && ".join(path_filter(p) for p in cond.parts) + ")"
    if isinstance(cond, Any_):
        return "(" + " || ".join(path_filter(p) for p in cond.parts) + ")"
    if isinstance(cond, Some):
        return f"exists(@{_accessor(cond.path)}[*] ? ({path_filter(cond.cond)}))"
    raise ValueError("decoded() has no path form")


def json_sql(cond: Cond, doc: str, scalar: Any) -> str:
    """``cond`` as a SQL condition over the JSON text expression ``doc`` (null: false).

    ``scalar(path)`` gives the SQL text of the string at ``path`` of the document (for
    ``decoded``), e.g. ``json_extract_scalar(doc, '$.policyDocument')``.
    """
    from detector.core.sqlparts import literal

    if isinstance(cond, All):
        return "(" + " AND ".join(json_sql(p, doc, scalar) for p in cond.parts) + ")"
    if isinstance(cond, Any_):
        return "(" + " OR ".join(json_sql(p, doc, scalar) for p in cond.parts) + ")"
    if isinstance(cond, Decoded):
        inner = literal(f"lax $ ? ({path_filter(cond.cond)})")
        text = _folded(scalar(cond.path)) if cond.fold else scalar(cond.path)
        return f"coalesce(json_exists({text}, {inner}), false)"
    return f"coalesce(json_exists({doc}, {literal(f'lax $ ? ({path_filter(cond)})')}), false)"


def flattened_sql(cond: Cond, entry: Any, base: str = "") -> str:
    """``cond`` over v1's flattened ``unmapped`` map: ``entry(key)`` is the SQL text of the
    value at ``requestParameters.<key>``. A path ``a.b.c`` is found as the text at ``a.b.c``,
    or as JSON (a list written whole) at ``a.b`` or ``a``, as ``from_flattened`` reads it."""
    from detector.core.sqlparts import literal

    def full(path: str) -> str:
        return f"{base}.{path}" if base else path

    if isinstance(cond, All):
        return "(" + " AND ".join(flattened_sql(p, entry, base) for p in cond.parts) + ")"
    if isinstance(cond, Any_):
        return "(" + " OR ".join(flattened_sql(p, entry, base) for p in cond.parts) + ")"
    if isinstance(cond, Decoded):
        inner = literal(f"lax $ ? ({path_filter(cond.cond)})")
        text = entry(full(cond.path))
        text = _folded(text) if cond.fold else text
        return f"coalesce(json_exists({text}, {inner}), false)"
    keys = full(cond.path).split(".")
    tests = []
    if isinstance(cond, Test):
        value = entry(".".join(keys))
        if cond.op == "present":
            tests.append(f"{value} IS NOT NULL")
        elif cond.op == "lt":
            tests.append(f"coalesce(TRY_CAST({value} AS DOUBLE) < {cond.values[0]}, false)")
        elif cond.op == "prefix":
            tests.append(
                "coalesce("
                + " OR ".join(f"starts_with({value}, {literal(v)})" for v in cond.values)
                + ", false)"
            )
        else:
            tests.append(
                f"coalesce({value} IN ({', '.join(literal(v) for v in cond.values)}), false)"
            )
    else:
        # One object written flattened: the condition on its own keys.
        tests.append(flattened_sql(cond.cond, entry, full(cond.path)))
    # The rest of the path inside JSON written whole at a shorter key.
    start = len(base.split(".")) if base else 0
    for cut in range(max(start, 1), len(keys)):
        rest = ".".join(keys[cut:])
        tail: Cond = (
            Some(rest, cond.cond) if isinstance(cond, Some) else Test(rest, cond.op, cond.values)
        )
        filt = literal(f"lax $ ? ({path_filter(tail)})")
        tests.append(f"coalesce(json_exists({entry('.'.join(keys[:cut]))}, {filt}), false)")
    if isinstance(cond, Some):
        # The list itself written whole at the full key.
        filt = literal(f"lax $[*] ? ({path_filter(cond.cond)})")
        tests.append(f"coalesce(json_exists({entry('.'.join(keys))}, {filt}), false)")
    return "(" + " OR ".join(tests) + ")"
