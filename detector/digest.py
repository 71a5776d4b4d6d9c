"""The SNS digest: every finding of one run in one message (ESCU alerts in digest mode).

Pure: builds subjects, bodies and message attributes; ``detector.aws.sns`` sends them.

One publish carries a body per protocol (``MessageStructure="json"``): ``email`` gets plain text
a person reads on a phone, ``default`` and ``sqs`` get the JSON document every machine output
shares. A digest that would pass SNS's size limit is split into parts, and a finding too large
on its own is shrunk (long strings cut, samples trimmed, marked ``truncated_for_size``): a
finding is never dropped.

Everything taken from the data (user agent, repository names, ARNs) is attacker-controlled:
in the email and subject it is escaped and length-capped; in JSON it is JSON-escaped.
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from detector.detection import DETECTION
from detector.findings import Finding
from detector.output import document, safe_text

# SNS: message body plus attribute names, types and values, in UTF-8 bytes (topic default).
MAX_MESSAGE_BYTES = 262_144
# Left free under the limit: subject, part numbers growing a digit, anything SNS adds.
HEADROOM = 4_096
# SNS subjects must be shorter than 100 characters.
SUBJECT_MAX = 99
# Longest data value shown in the email; more is cut with an ellipsis.
VALUE_MAX = 300
# Longest list shown in the email; the JSON body has the whole sample.
LIST_MAX = 10
WIDTH = 70

# Shrinking steps for a finding too large for a message on its own: (longest string, longest
# list). The last one always fits: about 30 keys of at most ~100 bytes.
_SHRINK_STEPS = ((8192, 50), (2048, 20), (512, 10), (128, 5), (64, 1), (64, 0))
# Part label used when sizing one finding alone: the widest a real label can be.
_WIDEST_PART = (99_999, 99_999)
# Room kept while packing for the summary lines, which depend on the findings in a part.
_PACKING_SLACK = 1_024

_MITRE_NAMES = {
    "T1204.003": "User Execution: Malicious Image",
    "T1204": "User Execution",
}

# Only values of these shapes are put into shell commands (and they are quoted anyway): a
# responder pastes these, so a hostile repository name must never become shell syntax.
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")
_REPOSITORY = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
_ALLOWLIST_ENTRY = re.compile(r"[!-~]{1,2048}")
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_.\-/]{1,2048}")

Part = tuple[int, int]  # (i, n): part i of n, 1-based


@dataclass(frozen=True)
class Message:
    """One SNS publish: ``Subject``, ``Message`` (a MessageStructure=json envelope), attributes."""

    subject: str
    message: str
    attributes: dict[str, dict[str, str]]
    finding_count: int

    @property
    def size(self) -> int:
        """Bytes SNS counts (body and attributes), plus the subject for good measure."""
        return (
            len(self.subject.encode())
            + len(self.message.encode())
            + sum(
                len(name.encode()) + len(attr["DataType"]) + len(attr["StringValue"].encode())
                for name, attr in self.attributes.items()
            )
        )


@dataclass(frozen=True)
class _Item:
    """A finding as rendered: its place among ``total``, its actor's name, its JSON record."""

    index: int
    total: int
    who: str
    record: dict[str, Any]

    @cached_property
    def record_json(self) -> str:
        return json.dumps(self.record)

    @cached_property
    def section(self) -> str:
        """The finding's part of the email."""
        return "\n".join(_finding_lines(self)) + "\n"

    @cached_property
    def cost(self) -> int:
        """Bytes this finding adds to a message: twice in the envelope as JSON (default, sqs),
        once as email text, and at most one new value in each attribute array."""
        attrs = sum(
            len(json.dumps(self.record[k])) + 2 for k in ("actor.user.account.uid", "region")
        )
        return 2 * _escaped_len(self.record_json + ", ") + _escaped_len(self.section) + attrs


def _escaped_len(text: str) -> int:
    """UTF-8 bytes of ``text`` as a JSON string value in the envelope, quotes excluded."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def _items(findings: Sequence[Finding]) -> list[_Item]:
    total = len(findings)
    return [_Item(i, total, f.who(), f.to_record()) for i, f in enumerate(findings, 1)]


def _require(findings: Sequence[Finding]) -> None:
    if not findings:
        raise ValueError("a digest needs at least one finding")


# --- subject ---------------------------------------------------------------------------------


def subject(findings: Sequence[Finding]) -> str:
    """``[MEDIUM] ECR push by unknown principal: <name> (+N more)``: < 100 printable ASCII."""
    _require(findings)
    return _subject(findings[0].who(), len(findings), None)


def _short_name(who: str) -> str:
    """``arn:aws:iam::1:user/old-contractor`` → ``old-contractor``; role sessions keep the role."""
    parts = who.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn":
        resource = parts[5]
        _kind, sep, rest = resource.partition("/")
        return rest if sep and rest else resource
    return who


def _subject_text(value: str, room: int) -> str:
    # ASCII only: SNS documents subjects as free of line breaks and control characters, and
    # older documentation said ASCII. IAM names and ARNs are ASCII, so nothing real is lost.
    text = "".join(ch if " " <= ch <= "~" else " " if ch.isspace() else "?" for ch in value)
    text = " ".join(text.split()) or "(unnamed)"
    if len(text) > room:
        text = text[: max(room - 3, 1)] + "..."
    return text


def _subject(who: str, count: int, part: Part | None) -> str:
    prefix = f"[{DETECTION.severity.upper()}] ECR push by unknown principal: "
    more = f" (+{count - 1} more)" if count > 1 else ""
    label = f" (part {part[0]}/{part[1]})" if part and part[1] > 1 else ""
    room = SUBJECT_MAX - len(prefix) - len(more) - len(label)
    return prefix + _subject_text(_short_name(who), room) + more + label


# --- email -----------------------------------------------------------------------------------


def email_text(findings: Sequence[Finding], *, context: Mapping[str, str] | None = None) -> str:
    """Plain text for a person on a phone: what, who, from where, why it matters, what next."""
    _require(findings)
    items = _items(findings)
    return _email(items, None, len(items), context)


def _clean(value: object, limit: int = VALUE_MAX) -> str:
    """A data value made safe to show: control characters escaped, length capped."""
    if value is None or value == "":
        return "(not recorded)"
    # Escaping only lengthens text, so cutting first gives the same result without walking
    # a megabyte-long user agent character by character.
    text = str(value)[: limit + 1]
    if text.isprintable():  # no Other or Separator character: nothing for safe_text to escape
        return text if len(text) <= limit else text[: limit - 1] + "…"
    return safe_text(text, limit)


def _wrap(text: str, indent: str = "  ", hang: str = "    ") -> list[str]:
    if len(indent) + len(text) <= WIDTH:
        return [(indent + text).rstrip()]
    return textwrap.wrap(
        text,
        width=WIDTH,
        initial_indent=indent,
        subsequent_indent=hang,
        break_long_words=False,  # keep ARNs and URLs whole so they can be copied
        break_on_hyphens=False,
    ) or [indent.rstrip()]


def _field(label: str, value: object) -> list[str]:
    return _wrap(f"{label}: {_clean(value)}")


def _list_field(label: str, values: Sequence[Any], *, optional: bool = False) -> list[str]:
    if not values:
        return [] if optional else _wrap(f"{label}: (not recorded)")
    shown = [_clean(v) for v in values[:LIST_MAX]]
    extra = len(values) - len(shown)
    text = ", ".join(shown)
    if extra > 0:
        text += f" (+{extra} more in the JSON)"
    return _wrap(f"{label} ({len(values)}): {text}")


def _when(value: object) -> str:
    if isinstance(value, str) and _TIME.fullmatch(value):
        return value.replace("T", " ") + " UTC"
    return _clean(value)


def _command(words: Sequence[str], options: Sequence[tuple[str, str]]) -> list[str]:
    """A shell command, every value quoted, continued with backslashes past ~70 columns."""
    head = " ".join(shlex.quote(w) for w in words)
    opts = [f"{flag} {shlex.quote(value)}" for flag, value in options]
    one_line = "    " + " ".join([head, *opts])
    if len(one_line) <= WIDTH:
        return [one_line]
    lines = ["    " + head + " \\"]
    for i, opt in enumerate(opts):
        lines.append("      " + opt + (" \\" if i < len(opts) - 1 else ""))
    return lines


def _window(first: object, last: object) -> tuple[str, str] | None:
    """The finding's time range padded by a minute each side, as CLI timestamps."""
    if not (isinstance(first, str) and isinstance(last, str)):
        return None
    if not (_TIME.fullmatch(first) and _TIME.fullmatch(last)):
        return None
    pad = timedelta(minutes=1)
    start = datetime.strptime(first, _TIME_FORMAT).replace(tzinfo=UTC) - pad
    end = datetime.strptime(last, _TIME_FORMAT).replace(tzinfo=UTC) + pad
    return start.strftime(_TIME_FORMAT) + "Z", end.strftime(_TIME_FORMAT) + "Z"


def _allowlist_entry(rec: Mapping[str, Any], who: str) -> str | None:
    """What to add to trust this actor: the role (covers its sessions), else the caller."""
    for candidate in (*rec["session_issuers"][:1], rec["user"], *rec["invoked_by"][:1], who):
        if isinstance(candidate, str) and _ALLOWLIST_ENTRY.fullmatch(candidate):
            return candidate
    return None


def _next_steps(item: _Item) -> list[str]:
    rec = item.record
    region = rec["region"] if isinstance(rec["region"], str) else ""
    region_opt = [("--region", region)] if _REGION.fullmatch(region) else []
    lines = ["Check next"]
    repos = [r for r in rec["repositories"] if isinstance(r, str) and _REPOSITORY.fullmatch(r)]
    if repos:
        lines.append("  - The images pushed (newest five per repository):")
        for repo in repos[:3]:
            lines += _command(
                ["aws", "ecr", "describe-images"],
                [
                    *region_opt,
                    ("--repository-name", repo),
                    ("--query", "sort_by(imageDetails,&imagePushedAt)[-5:]"),
                ],
            )
        lines.append("    (add --registry-id if the repository is in another account)")
    elif rec["repositories"]:
        lines.append("  - Repository names above are not valid ECR names: check by hand.")
    window = _window(rec["firstTime"], rec["lastTime"])
    if window:
        lines.append("  - Every PutImage around then, in the repository's account:")
        lines += _command(
            ["aws", "cloudtrail", "lookup-events"],
            [
                *region_opt,
                ("--lookup-attributes", "AttributeKey=EventName,AttributeValue=PutImage"),
                ("--start-time", window[0]),
                ("--end-time", window[1]),
            ],
        )
    entry = _allowlist_entry(rec, item.who)
    lines.append("  - If the push was expected, add to the allowlist (see end):")
    if entry is None:
        lines.append("    (no caller ARN usable as an allowlist entry was recorded)")
    else:
        lines += _wrap(entry, indent="    ", hang="      ")
    return lines


def _allowlist_lines(context: Mapping[str, str]) -> list[str]:
    param = context.get("allowlist_parameter", "")
    name = param if _PARAMETER_NAME.fullmatch(param) else "<allowlist parameter>"
    lines = ["How to allowlist an expected publisher"]
    lines += _wrap(
        "Entries are ARNs or globs; a role ARN trusts all its sessions. Read the parameter:",
        hang="  ",
    )
    lines += _command(
        ["aws", "ssm", "get-parameter"],
        [("--name", name), ("--query", "Parameter.Value"), ("--output", "text")],
    )
    lines += _wrap(
        "then write it back with the entry added, in the format it already uses (lines, "
        "commas or a JSON array):",
        hang="  ",
    )
    lines += _command(
        ["aws", "ssm", "put-parameter", "--overwrite"],
        [("--name", name), ("--value", "<current value>,<entry>")],
    )
    lines.append("")
    return lines


def _finding_lines(item: _Item) -> list[str]:
    rec = item.record
    lines = ["-" * 40, f"FINDING {item.index} OF {item.total}"]
    lines += _wrap(DETECTION.message(_clean(item.who)), indent="", hang="  ")
    if rec.get("truncated_for_size"):
        lines += _wrap(
            "(Some values of this finding were cut to fit the SNS size limit: the detector's "
            "CLI output has them whole.)",
            indent="",
            hang="",
        )
    lines.append("Who")
    lines += _field("Caller ARN", rec["user"])
    lines += _field("Account", rec["actor.user.account.uid"])
    lines += _list_field("Session issuer (role)", rec["session_issuers"], optional=True)
    lines += _list_field("Principal id", rec["principal_ids"], optional=True)
    lines += _list_field("Invoked by (AWS service)", rec["invoked_by"], optional=True)
    lines.append("From where")
    if rec["src_ip"] or not rec["src_endpoint.domain"]:
        lines += _field("Source IP", rec["src_ip"])
    if rec["src_endpoint.domain"]:
        lines += _field("Source domain", rec["src_endpoint.domain"])
    lines += _field("Region", rec["region"])
    lines += _field("User agent", rec["user_agent"])
    lines.append("What")
    lines += _list_field("Repositories", rec["repositories"])
    lines += _list_field("Image tags", rec["image_tags"])
    if rec["samples_truncated"]:
        lines += _wrap("(More distinct values were seen than the detector keeps.)")
    count, ok, bad = rec["count"], rec["succeeded"], rec["failed"]
    status = f"{ok} succeeded, {bad} failed"
    if isinstance(count, int) and count > ok + bad:
        status += f", {count - ok - bad} without a status"
    lines += _wrap(f"PutImage calls: {count} ({status})")
    if not ok:
        lines += _wrap(
            "No push succeeded, so no image was written; the credentials still reached ECR.",
            indent="    ",
            hang="    ",
        )
    lines.append(f"  First seen: {_when(rec['firstTime'])}")
    lines.append(f"  Last seen:  {_when(rec['lastTime'])}")
    lines.append("Evidence")
    lines += _list_field("Sample event ids", rec["event_ids"])
    lines += _list_field("Source objects", rec["source_objects"], optional=True)
    lines += _next_steps(item)
    lines.append("")
    return lines


def _summary_lines(items: Sequence[_Item], part: Part | None, total: int) -> list[str]:
    calls = sum(int(it.record["count"] or 0) for it in items)
    principals = len({it.who for it in items})
    accounts = _distinct(it.record["actor.user.account.uid"] for it in items)
    lines = [
        "ECR image push by a principal not on the allowlist",
        "=" * 50,
    ]
    noun = "finding" if len(items) == 1 else "findings"
    lines += _wrap(
        f"{len(items)} {noun}: {calls} PutImage call(s) by {principals} principal(s) "
        "that are not on the list of principals allowed to push images.",
        indent="",
        hang="",
    )
    if accounts:
        shown = ", ".join(_clean(a, 64) for a in accounts[:5])
        if len(accounts) > 5:
            shown += f" (+{len(accounts) - 5} more)"
        lines += _wrap(f"Caller account(s): {shown}", indent="", hang="  ")
    if part is not None and part[1] > 1 and items:
        first, last = items[0].index, items[-1].index
        lines.append(
            f"Part {part[0]} of {part[1]} of this digest: findings {first}-{last} of {total}."
        )
    mitre = ", ".join(DETECTION.mitre_attack_ids)
    lines.append(
        f"Severity {DETECTION.severity.upper()} (risk {DETECTION.risk_score}), "
        f"MITRE ATT&CK {mitre}."
    )
    lines.append("")
    return lines


def _context_lines(context: Mapping[str, str]) -> list[str]:
    if not context:
        return []
    lines = ["Run"]
    for key, value in context.items():
        lines += _wrap(f"{_clean(key, 64)}: {_clean(value)}")
    lines.append("")
    return lines


def _about_lines(context: Mapping[str, str]) -> list[str]:
    lines = ["-" * 40, "Why it matters"]
    lines += _wrap(DETECTION.description, hang="  ")
    for tid in DETECTION.mitre_attack_ids:
        name = _MITRE_NAMES.get(tid)
        lines += _wrap(f"MITRE ATT&CK {tid}" + (f" ({name})" if name else ""))
    lines.append("")
    lines.append("How to respond")
    lines += _wrap(DETECTION.how_to_respond, hang="  ")
    lines.append("")
    lines += _allowlist_lines(context)
    lines.append("Known false positives")
    lines += _wrap(DETECTION.known_false_positives, hang="  ")
    lines.append("")
    lines.append("References")
    lines += [f"  {url}" for url in DETECTION.references]
    lines.append("")
    lines += _wrap(
        f"Detection: {DETECTION.name} (v{DETECTION.version}, id {DETECTION.id}).",
        indent="",
        hang="",
    )
    lines += _wrap(
        "Values above come from CloudTrail records anyone with AWS credentials can shape: "
        f"they are shown escaped and cut at {VALUE_MAX} characters. Treat them as untrusted.",
        indent="",
        hang="",
    )
    return lines


def _email(
    items: Sequence[_Item], part: Part | None, total: int, context: Mapping[str, str] | None
) -> str:
    ctx = context or {}
    lines = _summary_lines(items, part, total) + _context_lines(ctx)
    head = "\n".join(lines) + "\n"
    return head + "".join(item.section for item in items) + "\n".join(_about_lines(ctx)) + "\n"


# --- JSON body and attributes ----------------------------------------------------------------


def json_body(findings: Sequence[Finding]) -> str:
    """``{"detection": {...}, "findings": [...]}``: the JSON every machine output shares."""
    return json.dumps(document(findings))


def _body(items: Sequence[_Item], part: Part, total: int, context: Mapping[str, str] | None) -> str:
    digest = {
        "part": part[0],
        "parts": part[1],
        "finding_count": len(items),
        "first_finding": items[0].index if items else None,
        "total_findings": total,
    }
    extra: dict[str, Any] = {"digest": digest}
    if context:
        extra["context"] = dict(context)
    # json.dumps(document(findings, **extra)), assembled from each finding's cached JSON.
    # ASCII JSON (json.dumps' default): valid UTF-8 whatever the data holds.
    doc = document([], **extra)
    return "".join(
        [
            '{"detection": ',
            json.dumps(doc["detection"]),
            ', "findings": [',
            ", ".join(it.record_json for it in items),
            "]",
            *(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items() if k in extra),
            "}",
        ]
    )


def _distinct(values: Iterable[object]) -> list[str]:
    return sorted({v for v in values if isinstance(v, str) and v})


def attributes(findings: Sequence[Finding]) -> dict[str, dict[str, str]]:
    """SNS ``MessageAttributes`` for subscription filter policies."""
    return _attributes([f.to_record() for f in findings])


def _attributes(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    accounts = _distinct(r["actor.user.account.uid"] for r in records)
    regions = _distinct(r["region"] for r in records)
    return {
        "severity": {"DataType": "String", "StringValue": DETECTION.severity},
        "detection_id": {"DataType": "String", "StringValue": DETECTION.id},
        "finding_count": {"DataType": "Number", "StringValue": str(len(records))},
        # String.Array values are JSON arrays; ASCII JSON keeps them valid whatever the data.
        "account_ids": {"DataType": "String.Array", "StringValue": json.dumps(accounts)},
        "regions": {"DataType": "String.Array", "StringValue": json.dumps(regions)},
    }


# --- messages --------------------------------------------------------------------------------


def _build(
    items: Sequence[_Item], part: Part, total: int, context: Mapping[str, str] | None
) -> Message:
    body = _body(items, part, total, context)
    envelope = {
        "default": body,
        "email": _email(items, part, total, context),
        "sqs": body,
    }
    who = items[0].who if items else ""
    return Message(
        subject=_subject(who, len(items), part),
        # Not ensure_ascii: the email's non-ASCII text costs 2-4 bytes a character instead of
        # 6-12. The email is free of lone surrogates (escaped by safe_text), the body is ASCII.
        message=json.dumps(envelope, ensure_ascii=False),
        attributes=_attributes([it.record for it in items]),
        finding_count=len(items),
    )


def _cap(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return f"{value[:limit]}…[{len(value) - limit} more characters cut]"


def _shrink_record(rec: Mapping[str, Any], str_max: int, list_max: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    trimmed = False
    for key, value in rec.items():
        if isinstance(value, str):
            out[key] = _cap(value, str_max)
        elif isinstance(value, list):
            out[key] = [_cap(v, str_max) if isinstance(v, str) else v for v in value[:list_max]]
            trimmed = trimmed or len(value) > list_max
        else:
            out[key] = value
    out["samples_truncated"] = bool(rec.get("samples_truncated")) or trimmed
    out["truncated_for_size"] = True
    return out


def _fit_alone(item: _Item, base: int, budget: int, context: Mapping[str, str] | None) -> _Item:
    """The item, shrunk step by step if it cannot fit in a message on its own."""
    if base + item.cost + _PACKING_SLACK <= budget:
        return item
    for str_max, list_max in _SHRINK_STEPS:
        small = replace(
            item,
            who=_cap(item.who, str_max),
            record=_shrink_record(item.record, str_max, list_max),
        )
        if _build([small], _WIDEST_PART, item.total, context).size + _PACKING_SLACK <= budget:
            return small
    raise ValueError(f"a message of {budget} bytes cannot hold even one shrunk finding")


def messages(
    findings: Sequence[Finding],
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    context: Mapping[str, str] | None = None,
) -> list[Message]:
    """The digest as SNS messages: one when it fits, else parts of at most ``max_bytes``.

    Every finding is in exactly one part, in order. Sizes count UTF-8 bytes of the envelope,
    subject and attributes, with ``HEADROOM`` bytes left free.
    """
    _require(findings)
    budget = max_bytes - HEADROOM
    items = _items(findings)
    total = len(items)
    whole = _build(items, (1, 1), total, context)
    if whole.size <= budget:
        return [whole]

    # A message's size is nearly additive: a fixed overhead plus each finding's cost (body and
    # email are concatenations; a union's attribute arrays are no longer than the sum). Pack
    # greedily on that estimate, leaving slack for what varies (the summary lines), then check
    # the real size of every part and halve any part that is still too big.
    base = _build([], _WIDEST_PART, total, context).size
    groups: list[list[_Item]] = []
    current: list[_Item] = []
    used = base + _PACKING_SLACK
    for item in (_fit_alone(it, base, budget, context) for it in items):
        if current and used + item.cost > budget:
            groups.append(current)
            current, used = [], base + _PACKING_SLACK
        current.append(item)
        used += item.cost
    groups.append(current)

    while True:
        built = [_build(g, (i, len(groups)), total, context) for i, g in enumerate(groups, 1)]
        if all(m.size <= budget for m in built):
            return built
        regrouped: list[list[_Item]] = []
        for group, msg in zip(groups, built, strict=True):
            if msg.size <= budget:
                regrouped.append(group)
            elif len(group) > 1:
                half = len(group) // 2
                regrouped += [group[:half], group[half:]]
            else:  # pragma: no cover - _fit_alone sized it with the widest part label
                raise ValueError(f"finding {group[0].index} does not fit in {budget} bytes")
        groups = regrouped
