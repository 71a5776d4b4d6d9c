"""The SNS message: every alert of one invocation in one message (ESCU alerts in digest mode).

Pure: builds the subject, bodies and message attributes; ``detector.aws.sns`` sends them.

One publish carries a body per protocol (``MessageStructure="json"``): ``email`` gets plain text
a person reads on a phone, ``default`` (every other protocol, SQS included) gets JSON
``{"detection": {...}, "alerts": [...]}``.

The alerts may be of several detections (``Alert.detection``): still one message. Every word
that belongs to a detection (headline, summary, labels, the steps a responder takes next, the
section on trusting an expected principal) comes from its spec (``detector.core.spec``); the layout
is this module's and ``email``'s. With several detections the email has a section per
detection, in the order of their first alert, and the JSON lists each detection's metadata
under ``detections``.

**One message, under SNS's 256 KiB by construction.** The alert unit is the principal
(``detector.report.alerts``), and everything that grows with attacker-controlled data is bounded:
- the email details at most ``DETAIL_MAX`` principals over all detections (with a successful
  call first, then by count), each section with capped lists and values, then one line for the
  rest of each detection;
- the JSON carries every alert, rendered at the largest ``Limits`` step that fits the room the
  email leaves; only if even minimal alerts (totals, no samples) cannot all fit, the last ones
  (fewest calls, no success) are left out and counted in ``omitted``.

Everything taken from the data (user agent, request values, ARNs) is attacker-controlled: in
the email and subject it is escaped, whitespace-collapsed and length-capped; in JSON it is cut
and JSON-escaped (ASCII JSON: control, bidi and line-separator characters become ``\\uXXXX``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detector.analysis.output import detection_dict
from detector.core.spec import Detection
from detector.report.alerts import Alert, Limits
from detector.report.email import (
    _by_detection,
    _distinct,
    _email_text,
    _require,
    alert_severity,
    email_text,
)

# SNS: message body plus attribute names, types and values, in UTF-8 bytes (topic default).
MAX_MESSAGE_BYTES = 262_144
# Left free under the limit: anything SNS adds, and rounding in our own accounting.
HEADROOM = 4_096
# SNS subjects must be shorter than 100 characters.
SUBJECT_MAX = 99
# Values in the message attributes (filter policies), each cut to ATTRIBUTE_VALUE_MAX.
ATTRIBUTE_VALUES_MAX = 50
ATTRIBUTE_VALUE_MAX = 64

# Steps tried, largest first, until every alert fits in the JSON body.
LEVELS = (
    Limits(values=20, findings=10, text=512),
    Limits(values=10, findings=5, text=256),
    Limits(values=5, findings=2, text=128),
    Limits(values=1, findings=1, text=64),
    Limits(values=0, findings=0, text=64),
)


@dataclass(frozen=True)
class Message:
    """One SNS publish: ``Subject``, ``Message`` (a MessageStructure=json envelope), attributes."""

    subject: str
    message: str
    attributes: dict[str, dict[str, str]]
    alert_count: int
    # Alerts present in the JSON body (all of them unless the message had to leave some out).
    alerts_in_body: int = 0

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


# --- subject ---------------------------------------------------------------------------------


def subject(alerts: Sequence[Alert]) -> str:
    """``[MEDIUM] <detection's subject text><name> (+N more)``: < 100 printable ASCII.

    Alerts of several detections: ``[HIGH] 2 detections: <the first's text><name> (+N
    more)``, at the highest severity."""
    _require(alerts)
    groups = _by_detection(alerts)
    first = groups[0][0]
    severity = alert_severity(alerts)
    if len(groups) == 1:
        prefix = f"[{severity.upper()}] {_email_text(first).subject}"
    else:
        prefix = f"[{severity.upper()}] {len(groups)} detections: {_email_text(first).subject}"
    more = f" (+{len(alerts) - 1} more)" if len(alerts) > 1 else ""
    # The detection's own words, made safe and capped all the same: the name keeps some room.
    prefix = _subject_text(prefix, SUBJECT_MAX - len(more) - 12, strip=False)
    room = SUBJECT_MAX - len(prefix) - len(more)
    return prefix + _subject_text(_short_name(groups[0][1][0].who()), room) + more


def _short_name(who: str) -> str:
    """``arn:aws:iam::111122223333:user/old-contractor`` → ``old-contractor (111122223333)``;
    roles keep their path. The account stays: another account's ``ci-deployer`` must not read
    like the trusted CI role."""
    parts = who.split(":", 5)
    if len(parts) == 6 and parts[0] == "arn":
        resource = parts[5]
        _kind, sep, rest = resource.partition("/")
        name = rest if sep and rest else resource
        return f"{name} ({parts[4]})" if parts[4] else name
    return who


def _subject_text(value: str, room: int, *, strip: bool = True) -> str:
    # ASCII only: SNS documents subjects as free of line breaks and control characters, and
    # older documentation said ASCII. IAM names and ARNs are ASCII, so nothing real is lost.
    value = value[: room * 4]
    text = "".join(ch if " " <= ch <= "~" else " " if ch.isspace() else "?" for ch in value)
    if not strip:  # our own text: keep its trailing space, only cap it
        return text if len(text) <= room else text[: max(room - 3, 1)] + "..."
    text = " ".join(text.split()) or "(unnamed)"
    if len(text) > room:
        text = text[: max(room - 3, 1)] + "..."
    return text


# --- JSON body and attributes ----------------------------------------------------------------


def attributes(alerts: Sequence[Alert]) -> dict[str, dict[str, str]]:
    """SNS ``MessageAttributes`` for subscription filter policies (bounded lists)."""
    _require(alerts)
    detections = [d for d, _ in _by_detection(alerts)]
    accounts = _distinct(a.key.account for a in alerts)
    regions = _distinct(r for a in alerts for r in a.sample("regions")[0])

    def array(values: list[str]) -> str:
        # String.Array values are JSON arrays; ASCII JSON keeps them valid whatever the data.
        return json.dumps([v[:ATTRIBUTE_VALUE_MAX] for v in values[:ATTRIBUTE_VALUES_MAX]])

    attrs = {
        "severity": {"DataType": "String", "StringValue": alert_severity(alerts)},
        "detection_id": {"DataType": "String", "StringValue": detections[0].id},
    }
    if len(detections) > 1:
        attrs["detection_ids"] = {
            "DataType": "String.Array",
            "StringValue": array([d.id for d in detections]),
        }
    return attrs | {
        "alert_count": {"DataType": "Number", "StringValue": str(len(alerts))},
        "finding_count": {
            "DataType": "Number",
            "StringValue": str(sum(a.groups for a in alerts)),
        },
        # Whether any call succeeded (the name predates detection specs; filter policies use it).
        "pushed": {
            "DataType": "String",
            "StringValue": "true" if any(a.succeeded for a in alerts) else "false",
        },
        "account_ids": {"DataType": "String.Array", "StringValue": array(accounts)},
        "regions": {"DataType": "String.Array", "StringValue": array(regions)},
    }


def routing(attrs: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """Top-level keys of the JSON body for subscription filter policies on the message body:
    the values of ``attributes(alerts)``, as JSON (``pushed`` a boolean, lists as lists)."""
    out: dict[str, Any] = {}
    for name, attr in attrs.items():
        if name in ("alert_count", "finding_count"):
            continue  # in the body already, as numbers
        value = attr["StringValue"]
        if attr["DataType"] == "String.Array":
            out[name] = json.loads(value)
        elif name == "pushed":
            out[name] = value == "true"
        else:
            out[name] = value
    return out


def _detections(alerts: Sequence[Alert]) -> list[Detection]:
    return [d for d, _ in _by_detection(alerts)]


def document(alerts: Sequence[Alert], limits: Limits = LEVELS[0], **extra: Any) -> dict[str, Any]:
    """``{"detection": {...}, "alerts": [...]}``: the machine-facing JSON. ``detection`` is the
    first alert's; with alerts of several detections, ``detections`` lists each (in the order
    of their first alert) and every alert names its own (``detection_id``)."""
    _require(alerts)
    detections = _detections(alerts)
    doc: dict[str, Any] = {
        "detection": detection_dict(detections[0]),
        "alerts": [a.to_record(limits) for a in alerts],
    }
    if len(detections) > 1:
        doc["detections"] = [detection_dict(d) for d in detections]
    doc.update(extra)
    return doc


def _envelope(body: str, email: str) -> str:
    # Not ensure_ascii: the email's non-ASCII text costs 2-4 bytes a character instead of
    # 6-12. The email is free of lone surrogates (escaped by safe_text), the body is ASCII.
    return json.dumps({"default": body, "email": email}, ensure_ascii=False)


def _body(records: Sequence[str], detections: Sequence[Detection], extra: Mapping[str, Any]) -> str:
    """``json.dumps(document(...))`` from alert records already encoded (ASCII JSON), so that
    each alert is encoded once however many prefixes are tried."""
    parts = [
        '{"detection": ',
        json.dumps(detection_dict(detections[0])),
        ', "alerts": [',
        ", ".join(records),
        "]",
    ]
    if len(detections) > 1:
        parts.append(f', "detections": {json.dumps([detection_dict(d) for d in detections])}')
    parts += [f", {json.dumps(k)}: {json.dumps(v)}" for k, v in extra.items()]
    parts.append("}")
    return "".join(parts)


class _Builder:
    """Builds the message for the first ``shown`` alerts from their encoded records."""

    def __init__(
        self,
        alerts: Sequence[Alert],
        email: str,
        attrs: dict[str, dict[str, str]],
        subj: str,
        context: Mapping[str, str] | None,
    ) -> None:
        self.alerts = alerts
        self.detections = _detections(alerts)
        self.email = email
        self.attrs = attrs
        self.subj = subj
        self.context = {str(k)[:64]: str(v)[:512] for k, v in list((context or {}).items())[:10]}

    def trailer(self, shown: int) -> dict[str, Any]:
        """The document's keys after ``alerts``: counts, what was left out, the run."""
        rest = self.alerts[shown:]
        extra: dict[str, Any] = {
            "alert_count": len(self.alerts),
            "finding_count": sum(a.groups for a in self.alerts),
        }
        if rest:
            extra["omitted"] = {
                "alerts": len(rest),
                "pushes": sum(a.count for a in rest),
                "why": "the message would pass SNS's 256 KiB limit; see Security Hub",
            }
        if self.context:
            extra["context"] = self.context
        # What subscription filter policies match on (FilterPolicyScope: MessageBody): SNS
        # does not deliver message attributes with MessageStructure=json.
        extra |= routing(self.attrs)
        return extra

    def build(self, records: Sequence[str], shown: int | None = None) -> Message:
        """The message showing ``records`` (the first alerts, encoded). With ``shown``, the
        body says that many are shown whatever ``records`` holds: for sizing an empty one."""
        shown = len(records) if shown is None else shown
        body = _body(records, self.detections, self.trailer(shown))
        return Message(self.subj, _envelope(body, self.email), self.attrs, len(self.alerts), shown)


def _encoded(alerts: Sequence[Alert], limits: Limits, budget: int) -> list[str]:
    """The alerts' records as ASCII JSON (valid UTF-8 whatever the data holds), stopping at
    the first that takes the total past ``budget``: a prefix that long cannot fit anyway (the
    envelope only adds to it), and 100,000 principals are not all encoded to find that out."""
    out: list[str] = []
    total = 0
    for alert in alerts:
        record = json.dumps(alert.to_record(limits))
        out.append(record)
        total += len(record) + 2
        if total > budget:
            break
    return out


def message(
    alerts: Sequence[Alert],
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    context: Mapping[str, str] | None = None,
) -> Message:
    """The one SNS message for ``alerts``, at most ``max_bytes - HEADROOM`` bytes.

    Every alert at the largest ``LEVELS`` step that fits; if even the smallest step does not
    fit them all, as many as fit (the first ones in alert order: successful calls first, then
    the busiest) and ``omitted`` counts the rest.
    """
    _require(alerts)
    budget = max_bytes - HEADROOM
    email = email_text(alerts, context=context)
    builder = _Builder(alerts, email, attributes(alerts), subject(alerts), context)
    minimal = _encoded(alerts, LEVELS[-1], budget)
    if len(minimal) == len(alerts):
        smallest = builder.build(minimal)
        if smallest.size <= budget:
            for limits in LEVELS[:-1]:
                records = _encoded(alerts, limits, budget)
                if len(records) < len(alerts):
                    continue
                built = builder.build(records)
                if built.size <= budget:
                    return built
            return smallest
    if builder.build([]).size > budget:
        raise ValueError(f"a message of {budget} bytes cannot hold even the email")
    # Not all fit. The body is ASCII, so each record adds its JSON-escaped length in the
    # envelope, plus the ", " between records: every prefix is sized without building it.
    prefix = [0]
    for r in minimal:
        prefix.append(prefix[-1] + len(json.dumps(r)) - 2)

    def estimate(k: int) -> int:
        return builder.build([], shown=k).size + prefix[k] + 2 * max(k - 1, 0)

    low, high = 0, len(minimal) - 1  # all of ``minimal`` does not fit (checked above)
    while low < high:
        mid = (low + high + 1) // 2
        if estimate(mid) <= budget:
            low = mid
        else:
            high = mid - 1
    # The estimate is exact; checking the real thing costs one build and guards the limit.
    shown = low
    built = builder.build(minimal[:shown])
    while built.size > budget and shown > 0:
        shown -= 1
        built = builder.build(minimal[:shown])
    return built


def json_body(alerts: Sequence[Alert]) -> str:
    """The JSON of ``document(alerts)`` (largest step), for tests and the CLI."""
    return json.dumps(document(alerts))
