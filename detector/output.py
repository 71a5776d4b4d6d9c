"""Rendering findings for people (a table) and machines (JSON lines, one JSON document)."""

from __future__ import annotations

import dataclasses
import json
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from detector.detection import DETECTION
from detector.findings import Finding


def detection_dict() -> dict[str, Any]:
    """The detection's metadata as JSON-ready data."""
    data = dataclasses.asdict(DETECTION)
    data["risk_score"] = DETECTION.risk_score
    return data


def document(findings: Sequence[Finding], **extra: Any) -> dict[str, Any]:
    """``{"detection": {...}, "findings": [...]}``: the JSON body every machine output shares."""
    doc: dict[str, Any] = {
        "detection": detection_dict(),
        "findings": [f.to_record() for f in findings],
    }
    doc.update(extra)
    return doc


def write_jsonl(findings: Iterable[Finding], out: TextIO) -> None:
    for f in findings:
        out.write(json.dumps(f.to_record(), ensure_ascii=False) + "\n")


def write_json(findings: Sequence[Finding], out: TextIO, **extra: Any) -> None:
    json.dump(document(findings, **extra), out, ensure_ascii=False, indent=2)
    out.write("\n")


def safe_text(value: object, limit: int) -> str:
    """One printable line: control characters shown escaped, never sent to the terminal.

    Data comes from whoever made the API call (the user agent is attacker-controlled), so
    escape sequences in it must not reach a terminal or an email as such.
    """
    if value is None:
        return "-"
    text = str(value)
    out = []
    for ch in text:
        if ch in "\t\n\r" or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    clean = "".join(out)
    if len(clean) > limit:
        clean = clean[: max(limit - 1, 0)] + "…"
    return clean


_COLUMNS: list[tuple[str, str, int]] = [
    ("user", "user", 60),
    ("account", "actor.user.account.uid", 12),
    ("src_ip", "src_ip", 39),
    ("src_domain", "src_endpoint.domain", 24),
    ("region", "region", 14),
    ("user_agent", "user_agent", 40),
    ("count", "count", 7),
    ("firstTime", "firstTime", 19),
    ("lastTime", "lastTime", 19),
    ("repositories", "repositories", 40),
]


def write_table(findings: Sequence[Finding], out: TextIO) -> None:
    """A fixed-width table, one finding a row, widest values cut with an ellipsis."""
    if not findings:
        out.write(
            "No findings: every PutImage came from an allowlisted principal (or none was seen).\n"
        )
        return
    rows = []
    for f in findings:
        rec = f.to_record()
        row = []
        for _, key, width in _COLUMNS:
            value = rec[key]
            if isinstance(value, list):
                value = ", ".join(value) if value else None
            row.append(safe_text(value, width))
        rows.append(row)
    widths = [
        max(len(title), *(len(r[i]) for r in rows)) for i, (title, _, _) in enumerate(_COLUMNS)
    ]
    out.write("  ".join(t.ljust(w) for (t, _, _), w in zip(_COLUMNS, widths, strict=True)).rstrip())
    out.write("\n")
    for r in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")
    total = sum(f.count for f in findings)
    out.write(
        f"\n{len(findings)} finding(s), {total} PutImage call(s) by principals not on the "
        f"allowlist. {DETECTION.name} ({DETECTION.severity}, risk {DETECTION.risk_score}).\n"
    )
