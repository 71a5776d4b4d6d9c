"""SQL text shared by the Athena statement and the detections' SQL predicates.

Only constructs Trino (Athena) and DuckDB share; values from outside (allowlist entries) become
literals through ``literal``, which takes printable ASCII only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from detector.core.allowlist import Allowlist, entry_problem
from detector.core.errors import DetectorError

_PRINTABLE = re.compile(r"[ -~]*")


class QueryInputInvalid(DetectorError):
    """A region, account, time or allowlist that cannot go into the statement (a usage error)."""


def literal(value: str) -> str:
    """A SQL string literal. Only printable ASCII is accepted: nothing else is ever needed here,
    and it keeps control characters (and their odd handling by SQL engines) out of the query."""
    if not _PRINTABLE.fullmatch(value):
        raise QueryInputInvalid(f"{value[:80]!r} holds characters that cannot go into the query")
    return "'" + value.replace("'", "''") + "'"


def identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def column(path: str) -> str:
    """A dotted column path as a (row-field) dereference: ``"actor"."user"."uid"``."""
    return ".".join(identifier(part) for part in path.split("."))


def like_pattern(glob: str) -> str:
    """An allowlist glob as a LIKE pattern for ``ESCAPE '\\'``."""
    out = []
    for ch in glob:
        if ch in "\\%_":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def matches(col: str, allowlist: Allowlist) -> str | None:
    """True where ``col`` matches an entry; false (never null) otherwise, null included.

    The entries are checked again here (``entry_problem``): an ``Allowlist`` built directly
    must not bring a catch-all into the statement either.
    """
    for entry in allowlist.entries:
        problem = entry_problem(entry)
        if problem:
            raise QueryInputInvalid(f"allowlist entry {entry[:80]!r} {problem}")
    exact = [e for e in allowlist.entries if "*" not in e and "?" not in e]
    globs = [e for e in allowlist.entries if "*" in e or "?" in e]
    tests = []
    if exact:
        tests.append(f"{col} IN ({', '.join(literal(e) for e in exact)})")
    tests += [f"{col} LIKE {literal(like_pattern(g))} ESCAPE '\\'" for g in globs]
    if not tests:
        return None
    return "coalesce(" + " OR ".join(tests) + ", false)"


def trusted_sql(identity: Sequence[str], allowlist: Allowlist) -> str | None:
    """``Allowlist.trust_mask`` in SQL over (caller ARN, session issuer, calling service,
    source domain) expressions: true where trusted, never null; None when nothing can be."""
    *identities, domain_col = identity
    trusted = [t for c in identities if (t := matches(c, allowlist)) is not None]
    domain = matches(domain_col, allowlist)
    if domain is not None:
        # A push AWS made itself has no caller identity, only a source domain; the domain of a
        # row with any identity is never consulted (as in ``Allowlist.trust_mask``).
        no_identity = " AND ".join(f"{c} IS NULL" for c in identities)
        trusted.append(f"({no_identity} AND {domain})")
    if not trusted:
        return None
    return "(" + "\n      OR ".join(trusted) + ")"
