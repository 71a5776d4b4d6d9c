"""The email: plain text for a person on a phone (``email_text``), within ``EMAIL_BUDGET``.

A summary per detection, a section per principal (who, from where, what, the outcome, the
evidence, the detection's next steps), one line for the rest, then the detection's own words
on why it matters, how to respond and how to trust an expected principal. Also what the subject
and the JSON share with it: the alerts of a message by detection, and their severity. Pure; the
message around it is ``digest``'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detector.core.spec import Detection
from detector.detections import registry
from detector.report.alerts import FIRST_SUCCESS, NEW_VALUE, Alert
from detector.report.plaintext import VALUE_MAX, _clean, _data, _step_lines, _when, _window, _wrap

# Longest list shown in the email; the JSON body has more.
LIST_MAX = 5
# Principals described in detail in the email; the rest are summed up in one line.
DETAIL_MAX = 20
# Bytes the email may take in the envelope (escaped); the JSON body gets the rest.
EMAIL_BUDGET = 100_000

# Only values of these shapes are put into shell commands (and they are quoted anyway): a
# responder pastes these, so a hostile region must never become shell syntax. Lengths are
# checked first: a value of the right shape can still be a megabyte long. (The values a
# detection's own steps put into commands are checked by the detection.)
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")
_REGION_MAX = 32
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


# --- the alerts of a message, by detection ---------------------------------------------------


def _require(alerts: Sequence[Alert]) -> None:
    if not alerts:
        raise ValueError("a message needs at least one alert")


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


def _distinct(values: Iterable[object]) -> list[str]:
    return sorted({v for v in values if isinstance(v, str) and v})


# --- email -----------------------------------------------------------------------------------


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
    if note := getattr(alert, "triage_note", ""):  # muted, or reopened (detector.report.mutes)
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
