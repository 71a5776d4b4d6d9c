"""The SNS message: every alert of one invocation in one message (ESCU alerts in digest mode).

Pure: builds the subject, bodies and message attributes; ``detector.aws.sns`` sends them.

One publish carries a body per protocol (``MessageStructure="json"``): ``email`` gets plain text
a person reads on a phone, ``default`` (every other protocol, SQS included) gets JSON
``{"detection": {...}, "alerts": [...]}``.

The alerts may be of several detections (``Alert.detection``): still one message. Every word
that belongs to a detection (headline, summary, labels, the steps a responder takes next, the
section on trusting an expected principal) comes from its spec (``detector.spec``); the layout
is this module's. With several detections the email has a section per detection, in the order
of their first alert, and the JSON lists each detection's metadata under ``detections``.

**One message, under SNS's 256 KiB by construction.** The alert unit is the principal
(``detector.alerts``), and everything that grows with attacker-controlled data is bounded:
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
import re
import shlex
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from detector.analysis.findings import ctime
from detector.analysis.output import detection_dict, safe_text
from detector.core.spec import Detection, Step
from detector.detections import registry
from detector.report.alerts import FIRST_SUCCESS, NEW_VALUE, Alert, Limits

# SNS: message body plus attribute names, types and values, in UTF-8 bytes (topic default).
MAX_MESSAGE_BYTES = 262_144
# Left free under the limit: anything SNS adds, and rounding in our own accounting.
HEADROOM = 4_096
# SNS subjects must be shorter than 100 characters.
SUBJECT_MAX = 99
# Longest data value shown in the email; more is cut with an ellipsis.
VALUE_MAX = 200
# Longest list shown in the email; the JSON body has more.
LIST_MAX = 5
# Principals described in detail in the email; the rest are summed up in one line.
DETAIL_MAX = 20
# Bytes the email may take in the envelope (escaped); the JSON body gets the rest.
EMAIL_BUDGET = 100_000
# Values in the message attributes (filter policies), each cut to ATTRIBUTE_VALUE_MAX.
ATTRIBUTE_VALUES_MAX = 50
ATTRIBUTE_VALUE_MAX = 64
WIDTH = 70

# Steps tried, largest first, until every alert fits in the JSON body.
LEVELS = (
    Limits(values=20, findings=10, text=512),
    Limits(values=10, findings=5, text=256),
    Limits(values=5, findings=2, text=128),
    Limits(values=1, findings=1, text=64),
    Limits(values=0, findings=0, text=64),
)

# Only values of these shapes are put into shell commands (and they are quoted anyway): a
# responder pastes these, so a hostile region must never become shell syntax. Lengths are
# checked first: a value of the right shape can still be a megabyte long. (The values a
# detection's own steps put into commands are checked by the detection.)
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")
_REGION_MAX = 32
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_.\-/]{1,2048}")
# Severities from lowest to highest (ESCU's words); an unknown one ranks lowest.
SEVERITIES = ("informational", "low", "medium", "high", "critical")


@dataclass(frozen=True)
class Style:
    """How much the email shows: principals in detail, values per list, characters a value."""

    detail: int = DETAIL_MAX
    list_max: int = LIST_MAX
    value_max: int = VALUE_MAX


# Tried in turn until the email fits EMAIL_BUDGET; the last always does (a few KB).
STYLES = (Style(), Style(10, 5, 120), Style(5, 3, 80), Style(1, 2, 60))
# Blank space within a line: every Unicode whitespace character (tab, NBSP, U+3000, ...) except
# the line and record separators (``\n``, ``\r``, U+0085, U+2028, ...), which ``safe_text``
# shows escaped instead, as a sign that someone put a line break into the data.
# Printable characters that show as blank space (Hangul fillers, the Braille blank, ...) count
# as blank too: they are no whitespace to Python, but pad a line all the same.
_BLANKS = re.compile(
    r"(?:[^\S\n\r\v\f\x1c-\x1f\x85\u2028\u2029]|[\u115f\u1160\u2800\u3164\uffa0])+"
)
# Starts every continuation line of a wrapped data value (after the indentation): see ``_data``.
CONTINUED = "| "


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


def _require(alerts: Sequence[Alert]) -> None:
    if not alerts:
        raise ValueError("a message needs at least one alert")


# --- subject ---------------------------------------------------------------------------------


def _email_text(detection: Detection) -> Any:
    if detection.email is None:
        raise ValueError(f"detection {detection.slug} declares no email text")
    return detection.email


def _by_detection(alerts: Sequence[Alert]) -> list[tuple[Detection, list[Alert]]]:
    """The alerts of each detection, each in the order given; detections in the registry's
    order (the default detection first), so that a busy detection (nightly builds outside
    business hours, say) does not put itself before an unknown principal's push."""
    groups: dict[str, tuple[Detection, list[Alert]]] = {}
    for alert in alerts:
        groups.setdefault(alert.detection.id, (alert.detection, []))[1].append(alert)
    order = {d.id: i for i, d in enumerate(registry().values())}
    return sorted(groups.values(), key=lambda g: order.get(g[0].id, len(order)))


def _rank(severity: str) -> int:
    s = severity.lower()
    return SEVERITIES.index(s) if s in SEVERITIES else -1


def highest_severity(detections: Iterable[Detection]) -> str:
    """The highest severity of ``detections`` (the first of the highest, as written)."""
    return max(detections, key=lambda d: _rank(d.severity)).severity


def alert_severity(alerts: Iterable[Alert]) -> str:
    """The highest severity of ``alerts`` (each by its outcome: ``Alert.severity``)."""
    return max((a.severity for a in alerts), key=_rank)


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


# --- email -----------------------------------------------------------------------------------


def _clean(value: object, limit: int = VALUE_MAX) -> str:
    """A data value made safe to show: control characters and line breaks escaped, every run of
    blank space (spaces, tabs, NBSP, U+3000, ...) one space, so that padding cannot place text
    where the wrapping puts it on a line of its own; length capped."""
    if value is None or value == "":
        return "(not recorded)"
    raw = str(value)
    # Escaping only lengthens text, so cutting first gives the same result without walking
    # a megabyte-long user agent character by character. Collapsing shortens it: cut at four
    # times the limit, and say the value was cut even if little is left (a megabyte of spaces).
    room = limit * 4
    text = _BLANKS.sub(" ", raw[:room])
    text = text[: limit - 1] + "…" if len(raw) > room else text[: limit + 1]
    if text.isprintable():  # no Other or Separator character: nothing for safe_text to escape
        return text if len(text) <= limit else text[: limit - 1] + "…"
    return safe_text(text, limit)


def _data(text: str, indent: str = "  ") -> list[str]:
    """``text`` (a label and data values) wrapped, every continuation line marked.

    Continuation lines are indented two more and start with ``CONTINUED`` ("| "), which no line
    of the email's own starts with. Data can never begin a line any other way (``_clean``
    escapes line breaks), so whatever a value holds and however it is padded, it cannot render
    as a line of the email's own (a detection's "<Operation> calls: ..." label or outcome
    note, "Who", a "----" rule): on a phone, a line starting with "|" reads as the line
    above, continued. ASCII, so every mail client shows it the same.
    """
    return _wrap(text, indent=indent, hang=indent + "  " + CONTINUED)


def _wrap(text: str, indent: str = "  ", hang: str = "    ") -> list[str]:
    """Our own text (or a label and data, through ``_data``) wrapped to ``WIDTH``."""
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


def _field(label: str, value: object, st: Style) -> list[str]:
    return _data(f"{label}: {_clean(value, st.value_max)}")


def _list_field(
    label: str, alert: Alert, name: str, st: Style, *, optional: bool = False
) -> list[str]:
    values, total, more = alert.sample(name)
    return _values_field(label, values, total, more, st, optional=optional)


def _values_field(
    label: str,
    values: Sequence[str],
    total: int,
    more: bool,
    st: Style,
    *,
    optional: bool = False,
) -> list[str]:
    if not values:
        return [] if optional else _data(f"{label}: (not recorded)")
    shown = [_clean(v, st.value_max) for v in values[: st.list_max]]
    extra = total - len(shown)
    text = ", ".join(shown)
    if extra > 0:
        text += f" (+{extra} more" + (", and others not kept)" if more else ")")
    elif more:
        text += " (and others not kept)"
    count = f"{total}+" if more else str(total)
    return _data(f"{label} ({count}): {text}")


def _when(ms: int | None) -> str:
    text = ctime(ms)
    if text is not None:
        return text.replace("T", " ") + " UTC"
    if ms is None:
        return "(not recorded)"
    return f"(out of range: {ms} ms since 1970)"


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


def _window(first_ms: int | None, last_ms: int | None) -> tuple[str, str] | None:
    """The alert's time range padded by a minute each side, as CLI timestamps; None when a
    time is missing or outside what a calendar date can hold (hostile data)."""
    first, last = ctime(first_ms), ctime(last_ms)
    if first is None or last is None:
        return None
    pad = timedelta(minutes=1)
    try:
        start = datetime.strptime(first, _TIME_FORMAT).replace(tzinfo=UTC) - pad
        end = datetime.strptime(last, _TIME_FORMAT).replace(tzinfo=UTC) + pad
    except (ValueError, OverflowError):
        return None
    return start.strftime(_TIME_FORMAT) + "Z", end.strftime(_TIME_FORMAT) + "Z"


def _step_lines(step: Step, indent: str = "  - ", hang: str = "    ") -> list[str]:
    """One step of a detection's: our text, its commands, data values, our notes."""
    lines = _wrap(step.text, indent=indent, hang=hang)
    for cmd in step.commands:
        lines += _command(cmd.words, cmd.options)
    for value in step.data:
        lines += _data(value, indent="    ")  # one word (no spaces): one line
    for note in step.notes:
        lines += _wrap(note, indent="    ", hang="    ")
    return lines


def _next_steps(alert: Alert) -> list[str]:
    regions, _, _ = alert.sample("regions")
    region = next((r for r in regions if len(r) <= _REGION_MAX and _REGION.fullmatch(r)), "")
    window = _window(alert.first_ms, alert.last_ms)
    lines = ["Check next"]
    for step in _email_text(alert.detection).check_next(alert, region, window):
        lines += _step_lines(step)
    return lines


def _outcome_lines(alert: Alert) -> list[str]:
    text = _email_text(alert.detection)
    count, ok, bad = alert.count, alert.succeeded, alert.failed
    status = f"{ok} succeeded, {bad} failed"
    if count > ok + bad:
        status += f", {count - ok - bad} without a recorded status"
    # A "group" is one distinct combination of caller, user agent, source and region.
    combos = "" if alert.groups == 1 else f" from {alert.groups} caller/agent/source combinations"
    lines = _wrap(f"{text.calls}: {count} ({status}){combos}", indent="  ")
    errors = alert.error_counts()
    if errors:
        shown = ", ".join(f"{_clean(c, 80)} x{n}" for c, n in errors[:5])
        if len(errors) > 5:
            shown += f" (+{len(errors) - 5} more codes)"
        lines += _data(f"Why calls failed: {shown}", indent="  ")
    if ok:
        return lines
    note = text.all_failed if bad == count else text.outcome_unknown
    return lines + _wrap(note, indent="    ", hang="    ")


def _succeeded_label(detection: Detection, name: str, label: str) -> str:
    """How the email names the values of sample ``name`` in successful calls: the sample's
    label followed by the detection's ASFF listing label for them ("Pushed to" -> "<Label>
    pushed to"), else "<Label> (successful calls)"."""
    for listing, source, _ in detection.asff.listings if detection.asff else ():
        if source == f"succeeded:{name}":
            return f"{label} {listing[:1].lower()}{listing[1:]}"
    return f"{label} (successful calls)"


def _alert_lines(alert: Alert, index: int, total: int, st: Style) -> list[str]:
    detection = alert.detection
    text = _email_text(detection)
    lines = ["-" * 40]
    verdict = text.verdict_success if alert.succeeded else text.verdict_attempt
    lines.append(f"PRINCIPAL {index} OF {total}: {verdict}")
    if alert.severity != detection.severity:
        lines.append(f"Severity {alert.severity.upper()}: no call succeeded, nothing landed.")
    if text.reason is not None:
        # The detection's own words on why it fired (our text with data values: wrapped so
        # continuation lines are marked).
        for line in text.reason(alert, alert.options):
            lines += _data(line, indent="")
    lines += _data(detection.message(_clean(alert.who(), st.value_max)), indent="")
    if alert.reason == FIRST_SUCCESS:
        lines += _wrap(text.first_success, indent="", hang="")
    elif alert.reason == NEW_VALUE:
        lines += _wrap(text.new_value, indent="", hang="")
    if note := getattr(alert, "triage_note", ""):  # muted, or reopened (detector.mutes)
        lines += _data(_clean(note, 400), indent="")
    lines.append("Who")
    lines += _field("Principal", alert.who(), st)
    lines += _field("Account", alert.key.account, st)
    others = alert.cross_account()
    if others:
        # A principal of one account acting in another: the caller's account is not the one
        # whose resource was touched.
        lines += _data(
            f"CROSS-ACCOUNT: a principal of {_clean(alert.key.account, 20)} called into "
            f"{', '.join(_clean(a, 20) for a in others[:5])}"
        )
    lines += _list_field("Recorded in account", alert, "resource_accounts", st, optional=True)
    sessions, total, _ = alert.sample("sessions")
    if sessions != [alert.who()]:  # an IAM user's only "session" is the principal itself
        lines += _values_field("Caller ARNs (sessions)", sessions, total, False, st, optional=True)
    # CloudTrail's userIdentity type and principal id: for a caller recorded without an ARN
    # (another account's principal, type AWSAccount) they are all there is to go on.
    lines += _list_field("Caller types", alert, "caller_types", st, optional=True)
    lines += _list_field("Principal ids", alert, "principal_ids", st, optional=True)
    # The key to disable, and whether the session used MFA.
    lines += _list_field("Access key ids", alert, "access_keys", st, optional=True)
    mfa, _, _ = alert.sample("mfa")
    if mfa:
        lines.append(
            "  MFA used: "
            + {"true": "yes", "false": "no"}.get(",".join(sorted(mfa)), "in some sessions")
        )
    lines.append("From where")
    domains = list(dict.fromkeys(d for f in alert.ordered() if (d := f.field("src_domain"))))
    ips, _, _ = alert.sample("src_ips")
    if ips or not domains:
        lines += _list_field("Source IPs", alert, "src_ips", st)
    # AWS services call from a domain instead of an IP (replication, pull-through cache).
    lines += _values_field("Source domains", domains, len(domains), False, st, optional=True)
    lines += _list_field("Regions", alert, "regions", st)
    lines += _list_field("User agents", alert, "user_agents", st)
    lines.append("What")
    for sample in detection.samples:
        if sample.name != detection.escalate_on:
            continue
        ok = alert.succeeded_values(sample.name)
        if ok:
            label = _succeeded_label(detection, sample.name, sample.label)
            lines += _values_field(label, ok, len(ok), False, st)
    for sample in detection.extra_samples:
        lines += _list_field(sample.label, alert, sample.name, st, optional=True)
    for sample in detection.samples:
        shown_ok = sample.name == detection.escalate_on and alert.succeeded_values(sample.name)
        # After "<Label> pushed to", the full list is every call's, failed ones included.
        label = f"{sample.label} (all calls)" if shown_ok else sample.label
        lines += _list_field(label, alert, sample.name, st)
    if alert.held or alert.held_total:
        held = sorted(alert.held)
        escalate = next(s for s in detection.samples if s.name == detection.escalate_on)
        label = f"{_succeeded_label(detection, escalate.name, escalate.label)} since the last email"
        lines += _values_field(label, held, max(alert.held_total, len(held)), False, st)
    lines += _outcome_lines(alert)
    lines.append(f"  First seen: {_when(alert.first_ms)}")
    lines.append(f"  Last seen:  {_when(alert.last_ms)}")
    lines.append("Evidence")
    lines += _list_field("Sample event ids", alert, "event_ids", st)
    lines += _next_steps(alert)
    lines.append("")
    return lines


def _summary_lines(detection: Detection, alerts: Sequence[Alert]) -> list[str]:
    text = _email_text(detection)
    calls = sum(a.count for a in alerts)
    ok = sum(a.succeeded for a in alerts)
    succeeded = sum(1 for a in alerts if a.succeeded)
    accounts = _distinct(a.key.account for a in alerts)
    lines = [text.headline, "=" * 50]
    lines += _wrap(
        text.summary.format(calls=calls, principals=len(alerts), succeeded=ok),
        indent="",
        hang="",
    )
    if succeeded:
        lines += _wrap(text.pushed.format(count=succeeded), indent="", hang="")
    if accounts:
        shown = ", ".join(_clean(a, 64) for a in accounts[:5])
        if len(accounts) > 5:
            shown += f" (+{len(accounts) - 5} more)"
        lines += _data(f"Caller account(s): {shown}", indent="")
    mitre = ", ".join(detection.mitre_attack_ids)
    severity = alert_severity(alerts)
    lines.append(
        f"Severity {severity.upper()} (risk {detection.risk_score}), MITRE ATT&CK {mitre}."
    )
    lines.append("")
    return lines


def _overview_lines(groups: Sequence[tuple[Detection, Sequence[Alert]]]) -> list[str]:
    """The header of an email covering several detections: what it holds, in one look."""
    alerts = [a for _, group in groups for a in group]
    calls = sum(a.count for a in alerts)
    severity = alert_severity(alerts)
    lines = [f"Alerts of {len(groups)} detections", "=" * 50]
    lines += _wrap(
        f"{len(alerts)} principal(s) and {calls} call(s) over {len(groups)} detections, highest "
        f"severity {severity.upper()}; a section per detection follows.",
        indent="",
        hang="",
    )
    for detection, group in groups:
        lines += _wrap(
            f"{_email_text(detection).headline}: {len(group)} principal(s), "
            f"{sum(a.count for a in group)} call(s), severity {alert_severity(group).upper()}.",
            indent="  - ",
            hang="    ",
        )
    lines.append("")
    return lines


def _rest_lines(
    detection: Detection, rest: Sequence[Alert], context: Mapping[str, str], st: Style
) -> list[str]:
    if not rest:
        return []
    words = _email_text(detection)
    calls = sum(a.count for a in rest)
    succeeded = sum(1 for a in rest if a.succeeded)
    lines = ["-" * 40]
    text = f"And {len(rest)} more principal(s) ({calls} {words.calls_noun}"
    text += words.rest_success.format(count=succeeded) + ")." if succeeded else ")."
    lines += _wrap(text, indent="", hang="")
    names = ", ".join(_clean(a.who(), min(80, st.value_max)) for a in rest[: st.list_max])
    lines += _data(f"Among them: {names}")
    where = (
        "Every principal is in this message's JSON body (any SQS or HTTPS subscriber of the "
        f"topic gets it) and in Security Hub (filter GeneratorId = {detection.id})"
    )
    function = context.get("function")
    if function and _FUNCTION_NAME.fullmatch(function):
        where += f", and in the logs of {function}"
    lines += _wrap(where + ".", indent="  ", hang="  ")
    lines.append("")
    return lines


def _trust_lines(detection: Detection, context: Mapping[str, str]) -> list[str]:
    """The detection's section on how to stop alerts about an expected principal."""
    text = _email_text(detection)
    lines = [text.trust_title]
    for step in text.trust_steps(context):
        lines += _step_lines(step, indent="  ", hang="  ")
    lines.append("")
    return lines


def _context_lines(context: Mapping[str, str]) -> list[str]:
    if not context:
        return []
    lines = ["Run"]
    for key, value in list(context.items())[:10]:
        lines += _data(f"{_clean(key, 64)}: {_clean(value)}")
    lines.append("")
    return lines


def _about_lines(detection: Detection, context: Mapping[str, str]) -> list[str]:
    lines = ["-" * 40, "Why it matters"]
    lines += _wrap(detection.description, hang="  ")
    for tid in detection.mitre_attack_ids:
        name = detection.mitre_names.get(tid)
        lines += _wrap(f"MITRE ATT&CK {tid}" + (f" ({name})" if name else ""))
    lines.append("")
    lines.append("How to respond")
    lines += _wrap(detection.how_to_respond, hang="  ")
    lines.append("")
    lines += _trust_lines(detection, context)
    lines.append("Known false positives")
    lines += _wrap(detection.known_false_positives, hang="  ")
    lines.append("")
    lines.append("References")
    lines += [f"  {url}" for url in detection.references]
    lines.append("")
    lines += _wrap(
        f"Detection: {detection.name} (v{detection.version}, id {detection.id}).",
        indent="",
        hang="",
    )
    return lines


def _untrusted_lines() -> list[str]:
    return _wrap(
        "Values above come from CloudTrail records anyone with AWS credentials can shape: "
        f"they are shown escaped and cut at {VALUE_MAX} characters. Treat them as untrusted.",
        indent="",
        hang="",
    )


def email_text(alerts: Sequence[Alert], *, context: Mapping[str, str] | None = None) -> str:
    """Plain text for a person on a phone: what, who, from where, why it matters, what next.

    At most ``DETAIL_MAX`` principals in detail over all detections (bounded sections), then
    one line for the rest of each detection; fewer and shorter when the values are long, so it
    stays within ``EMAIL_BUDGET``.
    """
    _require(alerts)
    for st in STYLES:
        text = _email(alerts, context or {}, st)
        if _escaped_len(text) <= EMAIL_BUDGET:
            break
    return text


def _escaped_len(text: str) -> int:
    """UTF-8 bytes of ``text`` as a JSON string value in the envelope, quotes excluded."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def _shares(sizes: Sequence[int], detail: int) -> list[int]:
    """How many principals of each detection are described in detail, ``detail`` in all:
    one each in turn (so every detection gets some), in the order of the detections."""
    shares = [0] * len(sizes)
    left = detail
    while left > 0 and any(s < n for s, n in zip(shares, sizes, strict=True)):
        for i, n in enumerate(sizes):
            if left > 0 and shares[i] < n:
                shares[i] += 1
                left -= 1
    return shares


def _email(alerts: Sequence[Alert], ctx: Mapping[str, str], st: Style) -> str:
    groups = _by_detection(alerts)
    if len(groups) == 1:
        detection = groups[0][0]
        lines = _summary_lines(detection, alerts) + _context_lines(ctx)
        for i, alert in enumerate(alerts[: st.detail], 1):
            lines += _alert_lines(alert, i, len(alerts), st)
        lines += _rest_lines(detection, alerts[st.detail :], ctx, st)
        lines += _about_lines(detection, ctx)
    else:
        lines = _overview_lines(groups) + _context_lines(ctx)
        shares = _shares([len(g) for _, g in groups], st.detail)
        for (detection, group), share in zip(groups, shares, strict=True):
            lines += _summary_lines(detection, group)
            for i, alert in enumerate(group[:share], 1):
                lines += _alert_lines(alert, i, len(group), st)
            lines += _rest_lines(detection, group[share:], ctx, st)
            lines += _about_lines(detection, ctx)
            lines.append("")
    lines += _untrusted_lines()
    return "\n".join(lines) + "\n"


# --- JSON body and attributes ----------------------------------------------------------------


def _distinct(values: Iterable[object]) -> list[str]:
    return sorted({v for v in values if isinstance(v, str) and v})


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
