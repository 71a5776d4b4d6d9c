"""Output for people's terminals and for scripts: ``--format jsonl|json|table``.

Every value comes from whoever made the API call. No control, bidi or line-separator character
may reach a terminal raw, a line-splitting reader must get one record per line, JSON must still
decode to the original values, and readable non-ASCII text stays readable.
"""

from __future__ import annotations

import io
import json
import unicodedata
from typing import Any

import pytest

from detector.analysis import output
from detector.analysis.findings import Finding

ACCOUNT = "111122223333"
# What the issue names, code point by code point: C0 and C1 controls, DEL, bidi controls, the
# characters ``str.splitlines()`` breaks on, and lone surrogates.
C0 = [chr(c) for c in range(0x20)]
C1 = [chr(c) for c in range(0x80, 0xA0)]
BIDI = [chr(c) for c in [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]]
SEPARATORS = ["\u2028", "\u2029", "\x85"]
SURROGATES = [chr(c) for c in range(0xD800, 0xE000)]
DANGEROUS = [*C0, "\x7f", *C1, *BIDI, *SEPARATORS, *SURROGATES]
# Invisible or unrenderable besides (same rule as the table and the email): zero-width
# space and joiner, BOM, soft hyphen, a tag character, private use.
ALSO_ESCAPED = ["\u200b", "\u200d", "\ufeff", "\xad", "\U000e0041", "\ue000", "\U0010fffd"]
READABLE = ["é", "ß", "日本語", "😀", "Ω", "\u00a0", "\u3000", "ﬁ", "\U0001f1fa\U0001f1f8"]
UNSAFE = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def finding(user_agent: str, **key: str | None) -> Finding:
    fields: dict[str, str | None] = {
        "user": f"arn:aws:iam::{ACCOUNT}:user/intruder",
        "account": ACCOUNT,
        "src_ip": "203.0.113.7",
        "src_domain": None,
        "region": "us-east-1",
    } | key
    f = Finding(
        key=(
            "PutImage",
            fields["user"],
            fields["account"],
            user_agent,
            fields["src_ip"],
            fields["src_domain"],
            fields["region"],
        ),
        count=1,
        first_ms=1_714_557_600_000,
        last_ms=1_714_557_600_000,
        succeeded=1,
        failed=0,
    )
    f.repositories.add([f"repo{user_agent}"], priority=True)
    f.image_tags.add([user_agent])
    return f


def raw_unsafe(text: str, allowed: str = "") -> list[str]:
    """Characters of ``text`` that must never be written raw (``allowed``: JSON structure)."""
    return [ch for ch in text if ch not in allowed and unicodedata.category(ch) in UNSAFE]


def escape(ch: str) -> str:
    """The JSON escape of one character, as UTF-16 code units."""
    units = ch.encode("utf-16-be", "surrogatepass")
    return "".join(f"\\u{int.from_bytes(units[i : i + 2]):04x}" for i in range(0, len(units), 2))


# --- safe_json: every code point ---------------------------------------------------------------


def test_each_dangerous_code_point_is_escaped_and_decodes_back() -> None:
    for ch in DANGEROUS + ALSO_ESCAPED:
        value = {f"k{ch}": [f"a{ch}b", ch, f"{ch}{ch}"]}
        text = output.safe_json(value)
        assert raw_unsafe(text) == [], f"U+{ord(ch):04X}"
        assert len(text.splitlines()) == 1, f"U+{ord(ch):04X}"
        text.encode("utf-8")  # a lone surrogate raw would make this (and the write) fail
        assert json.loads(text) == value, f"U+{ord(ch):04X}"
        if ch >= " ":
            assert escape(ch) in text, f"U+{ord(ch):04X}"  # \uXXXX, not another rendering


def test_every_code_point_is_either_kept_readable_or_escaped() -> None:
    """All 1,114,112 code points, in chunks: each one decodes back; exactly the unsafe ones
    are escaped (so a Unicode version with a format character outside the ranges the post-pass
    looks at fails here). ``x`` between them keeps a high and a low surrogate from pairing up."""
    for start in range(0, 0x110000, 0x8000):
        chars = [chr(c) for c in range(start, min(start + 0x8000, 0x110000))]
        value = "x".join(chars)
        text = output.safe_json([value])
        assert json.loads(text) == [value]
        assert len(text.splitlines()) == 1
        assert raw_unsafe(text) == []
        text.encode("utf-8")
        kept = set(text)
        for ch in chars:
            if ch < " " or ch in '"\\':
                continue  # json.dumps escapes these itself (\n, \u001b, \", \\)
            assert (ch in kept) == (unicodedata.category(ch) not in UNSAFE), f"U+{ord(ch):04X}"


def test_readable_text_stays_readable() -> None:
    value = {"user_agent": " ".join(READABLE)}
    text = output.safe_json(value)
    assert text == json.dumps(value, ensure_ascii=False)
    for word in READABLE:
        assert word in text


def test_the_json_structure_is_untouched() -> None:
    value = {"a": [1, 2.5, None, True], "b": {"c": "d\u202ee"}, "\u2028": "\x9b[31m"}
    pretty = output.safe_json(value, indent=2)
    assert json.loads(pretty) == value
    # Escaping added no line: as many lines as the ASCII rendering has.
    assert pretty.splitlines() == json.dumps(value, indent=2).splitlines()
    assert pretty == json.dumps(value, indent=2)  # here every non-ASCII character is unsafe


def test_a_lone_surrogate_used_to_break_the_write() -> None:
    value = {"user_agent": "x\ud800y"}
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):  # what ensure_ascii=False alone did
        stream.write(json.dumps(value, ensure_ascii=False))
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    stream.write(output.safe_json(value))
    stream.flush()
    assert isinstance(stream.buffer, io.BytesIO)
    assert json.loads(stream.buffer.getvalue()) == value


# --- jsonl and json documents ------------------------------------------------------------------


def hostile_findings() -> list[Finding]:
    """One finding per dangerous character (in the user agent, user, repository and tag)
    and one carrying all of them at once."""
    everything = "-".join(DANGEROUS + ALSO_ESCAPED)  # "-": no two surrogates pair up
    found = [finding(f"ua{ch}x", user=f"arn:aws:iam::{ACCOUNT}:user/u{ch}") for ch in DANGEROUS]
    found += [finding(everything, region=everything), finding(" ".join(READABLE))]
    return found


def test_jsonl_is_one_escaped_record_per_line() -> None:
    found = hostile_findings()
    out = io.StringIO()
    output.write_jsonl(found, out)
    text = out.getvalue()
    assert raw_unsafe(text, allowed="\n") == []
    text.encode("utf-8")
    lines = text.splitlines()  # Python's rule: also U+0085, U+2028, U+2029, \v, \f, \x1c-\x1e
    assert len(lines) == len(found) == len(text.split("\n")) - 1
    assert [json.loads(line) for line in lines] == [f.to_record() for f in found]
    for word in READABLE:
        assert word in text


def test_json_document_decodes_to_the_same_document() -> None:
    found = hostile_findings()
    out = io.StringIO()
    output.write_json(found, out, inputs={"unreadable": ["s3://b/k\x1b]0;x\x07\u202e"]})
    text = out.getvalue()
    assert raw_unsafe(text, allowed="\n") == []
    doc: dict[str, Any] = json.loads(text)
    expected = output.document(found, inputs={"unreadable": ["s3://b/k\x1b]0;x\x07\u202e"]})
    assert doc == json.loads(json.dumps(expected))  # (tuples in it come back as lists)
    assert len(text.splitlines()) == len(json.dumps(doc, indent=2).splitlines())
    assert "日本語" in text


# --- table -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chars",
    [C0, ["\x7f", *C1], BIDI, SEPARATORS, SURROGATES[:4] + SURROGATES[-4:], ALSO_ESCAPED],
    ids=["C0", "DEL and C1", "bidi", "separators", "surrogates", "invisible"],
)
def test_table_escapes_the_same_code_points(chars: list[str]) -> None:
    found = [
        finding(f"ua{ch}x", user=f"arn:aws:iam::{ACCOUNT}:user/u{ch}", region=f"r{ch}")
        for ch in chars
    ]
    out = io.StringIO()
    output.write_table(found, out)
    text = out.getvalue()
    assert raw_unsafe(text, allowed="\n") == []
    text.encode("utf-8")
    # Header, a row per finding, a blank line and the summary: nothing split a row.
    assert len(text.splitlines()) == len(found) + 3
    for ch in chars:
        assert f"ua{ch.encode('unicode_escape').decode()}x" in text


# --- the detections that ran ------------------------------------------------------------------


def test_json_document_lists_every_detection_that_ran() -> None:
    from detector import detections

    unknown = detections.get("ecr-upload-unknown-user")
    hours = detections.get("ecr-upload-outside-business-hours")
    found = [finding("docker")]  # the default detection's
    doc = output.document(found, detections=[unknown, hours])
    assert doc["detection"] == unknown.metadata()
    assert doc["detections"] == [unknown.metadata(), hours.metadata()]
    # Run alone, a detection without findings is still the document's detection.
    doc = output.document([], detections=[hours])
    assert doc["detection"] == hours.metadata() and "detections" not in doc
    # Without the detections that ran: as before (those of the findings).
    assert "detections" not in output.document(found)
    out = io.StringIO()
    output.write_json([], out, detections=[hours, unknown], inputs={"objects": 1})
    doc = json.loads(out.getvalue())
    assert [d["id"] for d in doc["detections"]] == [hours.id, unknown.id]
    assert doc["detection"]["id"] == hours.id and doc["inputs"] == {"objects": 1}
