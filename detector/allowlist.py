"""The allowlist of principals trusted to push images: parsing and matching.

Entries are exact values or globs (``*`` any run of characters, ``?`` one character),
case-sensitive, matched against the whole value. An entry trusts a row when it matches the caller
ARN, the session issuer ARN (so a role ARN covers all of its sessions) or the AWS service that
made the call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from detector.errors import AllowlistInvalid

# Entries are ARNs, service names or globs of them: printable, no spaces. Anything else is far
# more likely a paste error than a principal, and silently never matching would hide it.
_VALID_ENTRY = re.compile(r"[!-~]+")
_MAX_ENTRIES = 10_000


def _glob_to_regex(entry: str) -> str:
    parts = []
    for ch in entry:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return "".join(parts)


@dataclass(frozen=True)
class Allowlist:
    """Trusted principals. Build with ``Allowlist.parse`` or ``Allowlist.of``."""

    entries: tuple[str, ...]
    source: str = "<inline>"
    _exact: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _pattern: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact = tuple(e for e in self.entries if "*" not in e and "?" not in e)
        globs = [e for e in self.entries if "*" in e or "?" in e]
        # One anchored alternation, run by RE2 in Arrow: linear time whatever the input.
        pattern = "(?s)^(?:" + "|".join(_glob_to_regex(g) for g in globs) + ")$" if globs else None
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_pattern", pattern)

    @classmethod
    def of(cls, entries: Iterable[str], source: str = "<inline>") -> Allowlist:
        checked = []
        for i, entry in enumerate(entries, 1):
            if not _VALID_ENTRY.fullmatch(entry):
                raise AllowlistInvalid(
                    source, f"entry {i} {entry[:80]!r} is not a printable ARN or glob"
                )
            checked.append(entry)
        if len(checked) > _MAX_ENTRIES:
            raise AllowlistInvalid(source, f"{len(checked)} entries, more than {_MAX_ENTRIES}")
        return cls(tuple(dict.fromkeys(checked)), source)

    @classmethod
    def parse(cls, text: str, source: str = "<inline>") -> Allowlist:
        """Parse lines (``#`` comments), comma-separated values (SSM StringList) or a JSON array."""
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                data = json.loads(stripped)
            except ValueError as exc:
                raise AllowlistInvalid(source, f"looks like JSON but is not: {exc}") from exc
            if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
                raise AllowlistInvalid(source, "a JSON allowlist must be an array of strings")
            return cls.of((x.strip() for x in data if x.strip()), source)
        entries: list[str] = []
        for lineno, raw in enumerate(text.split("\n"), 1):
            line = raw.split("#", 1)[0]
            for item in line.split(","):
                item = item.strip()
                if not item:
                    continue
                if not _VALID_ENTRY.fullmatch(item):
                    raise AllowlistInvalid(
                        source, f"line {lineno}: {item[:80]!r} is not a printable ARN or glob"
                    )
                entries.append(item)
        return cls.of(entries, source)

    @property
    def empty(self) -> bool:
        return not self.entries

    def matches(self, value: str | None) -> bool:
        """Plain-Python match of one value (the vectorised ``mask`` is what scans use)."""
        if value is None:
            return False
        if value in self._exact:
            return True
        return self._pattern is not None and re.fullmatch(self._pattern, value) is not None

    def mask(self, *columns: pa.Array) -> pa.Array:
        """True for each row where any of ``columns`` matches an entry; null never matches."""
        n = len(columns[0])
        result = pa.array([False] * n, pa.bool_()) if n < 1024 else pa.repeat(False, n)
        if self.empty:
            return result
        exact = pa.array(self._exact, pa.string())
        for col in columns:
            if pa.types.is_null(col.type):
                continue
            hit = pc.is_in(col, value_set=exact) if len(exact) else None
            if self._pattern is not None:
                rx = pc.match_substring_regex(col, self._pattern)
                hit = rx if hit is None else pc.or_(hit, rx)
            if hit is not None:
                result = pc.or_(result, pc.fill_null(hit, False))
        return result
