"""Rendering findings for people (a table) and machines (JSON lines, one JSON document)."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from detector.analysis.findings import Finding, default_detection
from detector.core.spec import Detection


def detection_dict(detection: Detection | None = None) -> dict[str, Any]:
    """A detection's metadata as JSON-ready data (the default detection's without one)."""
    return (detection or default_detection()).metadata()


def detections_of(findings: Iterable[Finding]) -> list[Detection]:
    """The detections of ``findings``, each once, in the order of their first finding."""
    seen: dict[str, Detection] = {}
    for f in findings:
        seen.setdefault(f.detection.id, f.detection)
    return list(seen.values())


def document(
    findings: Sequence[Finding], detections: Sequence[Detection] = (), **extra: Any
) -> dict[str, Any]:
    """``{"detection": {...}, "findings": [...]}``: the JSON body every machine output shares.

    ``detections``: the detections that ran, in order (default: those of ``findings``).
    ``detection`` is the first finding's (else the first that ran; else the default
    detection's); when several ran, or findings are of several, ``detections`` lists each,
    those without findings too, and every finding names its own (``detection_id``)."""
    found = detections_of(findings)
    ran = list({d.id: d for d in [*detections, *found]}.values())
    first = found[0] if found else (ran[0] if ran else None)
    doc: dict[str, Any] = {
        "detection": detection_dict(first),
        "findings": [f.to_record() for f in findings],
    }
    if len(ran) > 1:
        doc["detections"] = [detection_dict(d) for d in ran]
    doc.update(extra)
    return doc


# Characters no output shows raw, whatever the format: controls (Cc: C0, DEL, C1 such as CSI
# U+009B, OSC U+009D and NEL U+0085), format characters (Cf: bidi controls such as U+202E and
# U+2066-U+2069, zero-width characters, the BOM), lone surrogates (Cs), private use (Co) and the
# line and paragraph separators (Zl, Zp). The data comes from whoever made the API call: these
# would drive a terminal, reorder what a person reads, or end a line early for a reader that
# splits lines the way Python's ``str.splitlines()`` does.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
# Where UNSAFE_CATEGORIES characters past C0 live (Unicode 14; a few blocks whole, for
# characters later versions add there): the JSON post-pass looks only at these, and checks
# the category of each, so readable text (CJK, emoji) is not walked character by character.
# ``json.dumps`` already escapes C0 controls, and the JSON structure itself is ASCII.
_CANDIDATES = re.compile(
    "[\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u206f\ud800-\uf8ff\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001345f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e007f"
    "\U000f0000-\U0010ffff]+"
)


def _json_escape(ch: str) -> str:
    """``ch`` as a JSON ``\\uXXXX`` escape: a surrogate pair past the BMP (JSON escapes
    UTF-16 code units)."""
    n = ord(ch)
    if n > 0xFFFF:
        n -= 0x10000
        return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"
    return f"\\u{n:04x}"


def _escape_unsafe(match: re.Match[str]) -> str:
    return "".join(
        _json_escape(ch) if unicodedata.category(ch) in UNSAFE_CATEGORIES else ch
        for ch in match.group()
    )


def safe_json(value: Any, *, indent: int | None = None) -> str:
    """``json.dumps`` that people's terminals and line-splitting readers can take.

    Readable JSON (``ensure_ascii=False``: accents, CJK and emoji stay as they are), except
    that every ``UNSAFE_CATEGORIES`` character becomes a ``\\uXXXX`` escape: no escape
    sequence reaches the terminal, no bidi control reorders the line, and one record stays one
    line for ``str.splitlines()`` (which also splits on U+0085, U+2028 and U+2029). Lone
    surrogates become escapes too, so the text always encodes as UTF-8 (raw, they make the
    write to stdout fail). ``json.loads`` gives back the original value; the one thing JSON
    itself cannot keep apart is a high and a low surrogate in a row, which decode as the one
    character they would pair into.

    A post-pass over the text is safe: ``json.dumps`` writes these characters raw only inside
    strings (the structure around them is ASCII), and there an escape means the same character.
    """
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    if text.isascii() and "\x7f" not in text:
        return text
    return _CANDIDATES.sub(_escape_unsafe, text)


def write_jsonl(findings: Iterable[Finding], out: TextIO) -> None:
    for f in findings:
        out.write(safe_json(f.to_record()) + "\n")


def write_json(
    findings: Sequence[Finding],
    out: TextIO,
    detections: Sequence[Detection] = (),
    **extra: Any,
) -> None:
    out.write(safe_json(document(findings, detections, **extra), indent=2) + "\n")


def safe_text(value: object, limit: int) -> str:
    """One printable line: control characters shown escaped, never sent to the terminal.

    Data comes from whoever made the API call (the user agent is attacker-controlled), so
    escape sequences in it must not reach a terminal or an email as such. Tabs and line breaks
    are escaped too, and every ``UNSAFE_CATEGORIES`` character (``\\x9b``, ``\\u202e``, ...).
    """
    if value is None:
        return "-"
    text = str(value)
    out = []
    for ch in text:
        if ch in "\t\n\r" or unicodedata.category(ch) in UNSAFE_CATEGORIES:
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    clean = "".join(out)
    if len(clean) > limit:
        clean = clean[: max(limit - 1, 0)] + "…"
    return clean


# (title, record key, width): the columns every table has, before the detections' own.
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
]
# Width of a detection's sample column (its first sample) and of the detection column.
_SAMPLE_WIDTH = 40
_DETECTION_WIDTH = 40


def _columns(found: Sequence[Detection]) -> list[tuple[str, str, int]]:
    """The table's columns for findings of ``found``: the detection (only with several), the
    common ones, then the first sample of each detection (each name once)."""
    columns = [("detection", "", _DETECTION_WIDTH)] if len(found) > 1 else []
    columns += _COLUMNS
    names = dict.fromkeys(d.samples[0].name for d in found if d.samples)
    columns += [(name, name, _SAMPLE_WIDTH) for name in names]
    return columns


def _email_texts(detection: Detection) -> tuple[str, str]:
    """The detection's (nothing found, found) lines for the table."""
    if detection.email is None:
        return f"No findings of {detection.name}.", "{findings} finding(s), {calls} call(s)."
    return detection.email.none_found, detection.email.found


def write_table(
    findings: Sequence[Finding], out: TextIO, detections: Sequence[Detection] = ()
) -> None:
    """A fixed-width table, one finding a row, widest values cut with an ellipsis, then a
    total line.

    ``detections``: the detections that ran (default: those of ``findings``, or the default
    detection when there are none). With more than one, a ``detection`` column names each
    finding's, and there is a total (or nothing-found) line per detection.
    """
    ran = list({d.id: d for d in [*detections, *detections_of(findings)]}.values())
    if not ran:
        ran = [default_detection()]
    if not findings:
        for d in ran:
            out.write(_email_texts(d)[0] + "\n")
        return
    columns = _columns(ran)
    rows = []
    for f in findings:
        rec = f.to_record()
        row = []
        for title, key, width in columns:
            value = f.detection.slug if title == "detection" and not key else rec.get(key)
            if isinstance(value, list):
                value = ", ".join(value) if value else None
            row.append(safe_text(value, width))
        rows.append(row)
    widths = [
        max(len(title), *(len(r[i]) for r in rows)) for i, (title, _, _) in enumerate(columns)
    ]
    out.write("  ".join(t.ljust(w) for (t, _, _), w in zip(columns, widths, strict=True)).rstrip())
    out.write("\n")
    for r in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")
    out.write("\n")
    for d in ran:
        mine = [f for f in findings if f.detection.id == d.id]
        none_found, found = _email_texts(d)
        if not mine:
            out.write(none_found + "\n")
            continue
        total = found.format(findings=len(mine), calls=sum(f.count for f in mine))
        out.write(f"{total} {d.name} ({d.severity}, risk {d.risk_score}).\n")
