"""Alerts of several detections in one invocation: one SNS message covering them all, one ASFF
finding per (detection, account, principal), and ``scan``'s outputs naming each detection.

The second detection is the default one under another id, slug, name, headline and severity:
what differs between them must come from the spec, never from the engine.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from datetime import UTC, datetime
from typing import Any

from detector.analysis import output
from detector.analysis.findings import Finding
from detector.core.spec import Detection
from detector.detections import DEFAULT, get
from detector.report import alerts as alerts_module
from detector.report import asff, asff_checks, digest
from detector.report.alerts import Alert, rollup
from detector.report.email import DETAIL_MAX, EMAIL_BUDGET, _shares

FIRST = get(DEFAULT)
SECOND = dataclasses.replace(
    FIRST,
    id="00000000-0000-4000-8000-000000000002",
    slug="test-second",
    name="Test Second Detection",
    severity="high",
    email=dataclasses.replace(FIRST.email, headline="SECOND HEADLINE: the other detection"),
)
ACCOUNT = "111122223333"
T0 = 1_714_557_600_000
LIMIT = digest.MAX_MESSAGE_BYTES - digest.HEADROOM
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def finding(
    user: str,
    detection: Detection = FIRST,
    *,
    count: int = 3,
    succeeded: int = 1,
    user_agent: str = "aws-cli/2.15.0",
    value: str = "payments-api",
) -> Finding:
    f = Finding(
        key=("PutImage", user, ACCOUNT, user_agent, "203.0.113.7", None, "us-east-1"),
        count=count,
        first_ms=T0,
        last_ms=T0 + 60_000,
        succeeded=succeeded,
        failed=count - succeeded,
        detection=detection,
    )
    f.sample("repositories").add([value], priority=succeeded > 0)
    f.sample("image_tags").add(["v1"])
    f.event_ids.add(["evt-1"])
    return f


def user(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def two_detections() -> list[Alert]:
    return rollup(
        [
            finding(user("alice"), FIRST, count=5),
            finding(user("bob"), FIRST, count=2, succeeded=0),
            finding(user("carol"), SECOND, count=4),
            # The same principal in both detections: two alerts.
            finding(user("alice"), SECOND, count=1, succeeded=0),
        ]
    )


def envelope(message: digest.Message) -> dict[str, str]:
    env = json.loads(message.message)
    assert isinstance(env, dict)
    return env


def body(message: digest.Message) -> dict[str, Any]:
    doc = json.loads(envelope(message)["default"])
    assert isinstance(doc, dict)
    return doc


def flat(text: str) -> str:
    """The words of ``text``, wrapped lines and values joined back."""
    return " ".join(re.sub(r"\n *\| ", " ", text).split())


def sns_size(message: digest.Message) -> int:
    return len(message.message.encode()) + sum(
        len(k.encode()) + len(v["DataType"].encode()) + len(v["StringValue"].encode())
        for k, v in message.attributes.items()
    )


# --- alerts ----------------------------------------------------------------------------------


def test_alerts_are_per_detection_and_carry_it() -> None:
    alerts = two_detections()
    assert len(alerts) == 4
    by = {(a.detection.slug, a.who()) for a in alerts}
    assert by == {
        (FIRST.slug, user("alice")),
        (FIRST.slug, user("bob")),
        (SECOND.slug, user("carol")),
        (SECOND.slug, user("alice")),
    }
    for a in alerts:
        assert a.key.detection_id == a.detection.id
        rec = a.to_record()
        assert rec["detection_id"] == a.detection.id
        assert rec["severity"] == a.severity  # by outcome (Alert.severity)
        assert list(rec)[: len(alerts_module.ALERT_KEYS)] == list(alerts_module.ALERT_KEYS)
    alice = [a for a in alerts if a.who() == user("alice")]
    assert len({a.id for a in alice}) == 2


def test_new_value_reason_is_named_by_the_detection() -> None:
    other = dataclasses.replace(SECOND, new_value_reason="new_target")
    [a, b] = rollup([finding(user("x"), FIRST), finding(user("y"), other)])
    a.reason = b.reason = alerts_module.NEW_VALUE
    assert a.to_record()["reason"] == "new_repository"
    assert b.to_record()["reason"] == "new_target"
    assert alerts_module.NEW_REPOSITORY == alerts_module.NEW_VALUE


# --- the SNS message -------------------------------------------------------------------------


def test_one_message_covers_both_detections() -> None:
    alerts = two_detections()
    message = digest.message(alerts, context={"allowlist_parameter": "/x/allowlist"})
    env = envelope(message)
    text = env["email"]
    # Each detection's section, in the order of its first alert.
    assert text.startswith("Alerts of 2 detections\n")
    first_at = text.index(FIRST.email.headline)
    second_at = text.index(SECOND.email.headline)
    assert (first_at < second_at) == (alerts[0].detection.id == FIRST.id)
    for d in (FIRST, SECOND):
        assert f"Detection: {d.name} (v{d.version}, id {d.id})." in flat(text)
        assert f"Severity {d.severity.upper()} (risk {d.risk_score})" in text
        assert d.email.trust_title in text
    # Four principals detailed, numbered within their detection.
    assert len(re.findall(r"^PRINCIPAL \d+ OF 2:", text, re.MULTILINE)) == 4
    assert flat(text).count("Treat them as untrusted.") == 1
    assert flat(text).endswith("Treat them as untrusted.")

    doc = body(message)
    assert doc["detection"] == FIRST.metadata() or doc["detection"] == SECOND.metadata()
    assert doc["detection"]["id"] == alerts[0].detection.id
    assert {d["id"] for d in doc["detections"]} == {FIRST.id, SECOND.id}
    assert doc["detections"][0] == doc["detection"]
    assert [r["detection_id"] for r in doc["alerts"]] == [a.detection.id for a in alerts]
    assert doc["alert_count"] == 4 and doc["finding_count"] == 4
    assert doc == json.loads(
        json.dumps(
            digest.document(
                alerts,
                alert_count=4,
                finding_count=4,
                context={"allowlist_parameter": "/x/allowlist"},
                **digest.routing(digest.attributes(alerts)),
            )
        )
    )

    attrs = message.attributes
    assert attrs["severity"]["StringValue"] == "high"  # the highest
    assert attrs["detection_id"]["StringValue"] == alerts[0].detection.id
    assert attrs["detection_ids"]["DataType"] == "String.Array"
    assert set(json.loads(attrs["detection_ids"]["StringValue"])) == {FIRST.id, SECOND.id}
    assert message.subject == digest.subject(alerts)


def test_one_detection_has_no_detections_list() -> None:
    alerts = rollup([finding(user("alice")), finding(user("bob"))])
    message = digest.message(alerts)
    assert "detections" not in body(message)
    assert "detection_ids" not in message.attributes
    assert not envelope(message)["email"].startswith("Alerts of")


def test_subject_of_several_detections() -> None:
    alerts = two_detections()
    subject = digest.subject(alerts)
    assert subject.startswith("[HIGH] 2 detections: ECR push by unknown principal: ")
    assert subject.endswith(" (+3 more)")
    assert len(subject) < 100
    long = rollup(
        [
            finding(user("n" * 300), SECOND),
            *(finding(user(f"u{i}"), FIRST) for i in range(12_345)),
        ]
    )
    subject = digest.subject(long)
    assert len(subject) < 100 and subject.endswith("(+12345 more)")
    assert all(" " <= ch <= "~" for ch in subject)
    # A detection's own subject text is capped too, and the name keeps room.
    wordy = dataclasses.replace(
        SECOND,
        email=dataclasses.replace(SECOND.email, subject="S\u202e" * 200 + ": "),
    )
    subject = digest.subject(rollup([finding(user("x"), FIRST), finding(user("y"), wordy)]))
    assert len(subject) < 100 and all(" " <= ch <= "~" for ch in subject)


def test_a_thousand_principals_over_two_detections_stay_bounded() -> None:
    found = [
        finding(
            user(f"p{i:04d}-" + "x" * 200),
            FIRST if i % 2 else SECOND,
            user_agent="U" * 2_000,
            value=f"repo-{i}-" + "v" * 200,
        )
        for i in range(1_000)
    ]
    alerts = rollup(found)
    assert len(alerts) == 1_000
    message = digest.message(alerts)
    assert sns_size(message) <= message.size <= LIMIT
    text = envelope(message)["email"]
    assert len(json.dumps(text, ensure_ascii=False).encode()) - 2 <= EMAIL_BUDGET
    detailed = re.findall(r"^PRINCIPAL \d+ OF 500:", text, re.MULTILINE)
    # DETAIL_MAX is shared: both detections get principals in detail, no more in all.
    assert 2 <= len(detailed) <= DETAIL_MAX
    for d in (FIRST, SECOND):
        assert d.email.headline in text
        assert f"filter GeneratorId = {d.id}" in flat(text)
    doc = body(message)
    shown = len(doc["alerts"])
    omitted = doc.get("omitted", {"alerts": 0})["alerts"]
    assert shown + omitted == 1_000 and doc["alert_count"] == 1_000
    assert {d["id"] for d in doc["detections"]} == {FIRST.id, SECOND.id}
    assert len(message.subject) < 100


def test_detail_shares_go_round_the_detections() -> None:
    assert _shares([30, 30], 20) == [10, 10]
    assert _shares([3, 30], 20) == [3, 17]
    assert _shares([5], 20) == [5]
    assert _shares([1, 1, 1], 2) == [1, 1, 0]


# --- ASFF ------------------------------------------------------------------------------------


def test_asff_ids_differ_per_detection_for_the_same_principal() -> None:
    alerts = [a for a in two_detections() if a.who() == user("alice")]
    out = [asff.to_asff(a, account_id=ACCOUNT, region="us-east-1", now=NOW) for a in alerts]
    for finding_, alert in zip(out, alerts, strict=True):
        asff_checks.validate(finding_)
        assert finding_["Id"] == f"{alert.detection.id}/principal/{alert.id}"
        assert finding_["GeneratorId"] == alert.detection.id
        assert finding_["Severity"]["Label"] == alert.severity.upper()
    assert out[0]["Id"] != out[1]["Id"]
    assert out[0]["GeneratorId"] != out[1]["GeneratorId"]


# --- scan's outputs --------------------------------------------------------------------------


def test_scan_document_lists_several_detections() -> None:
    found = [finding(user("a"), FIRST), finding(user("b"), SECOND)]
    doc = output.document(found)
    assert doc["detection"] == FIRST.metadata()
    assert doc["detections"] == [FIRST.metadata(), SECOND.metadata()]
    assert "detections" not in output.document(found[:1])
    assert output.document([])["detection"] == FIRST.metadata()
    assert output.detection_dict(SECOND) == SECOND.metadata()
    assert output.detection_dict() == FIRST.metadata()


def test_table_of_several_detections() -> None:
    found = [finding(user("a"), FIRST, count=2), finding(user("b"), SECOND, count=7)]
    out = io.StringIO()
    output.write_table(found, out)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:2] == ["detection", "user"]
    assert lines[1].startswith(FIRST.slug) and lines[2].startswith(SECOND.slug)
    assert lines[3] == ""
    assert lines[4].startswith("1 finding(s), 2 PutImage call(s)") and FIRST.name in lines[4]
    assert lines[5].startswith("1 finding(s), 7 PutImage call(s)") and SECOND.name in lines[5]
    assert len(lines) == 6

    # One detection: no detection column, one total line.
    out = io.StringIO()
    output.write_table(found[:1], out, [FIRST])
    assert out.getvalue().splitlines()[0].split()[0] == "user"

    # Two ran, one found something: its total, and the other's nothing-found line.
    out = io.StringIO()
    output.write_table(found[:1], out, [FIRST, SECOND])
    lines = out.getvalue().splitlines()
    assert lines[0].split()[0] == "detection"
    assert lines[-1] == SECOND.email.none_found

    # Nothing found by either.
    out = io.StringIO()
    output.write_table([], out, [FIRST, SECOND])
    assert out.getvalue() == FIRST.email.none_found + "\n" + SECOND.email.none_found + "\n"
    out = io.StringIO()
    output.write_table([], out)
    assert out.getvalue() == FIRST.email.none_found + "\n"


def test_detections_appear_in_registry_order_whatever_their_alerts_say() -> None:
    """A nightly build outside business hours sorts before an intruder by name; the message
    still leads with the default detection (the intruder), in the subject and the email."""
    import io
    import json as json_
    from datetime import UTC, datetime

    from detector import detections
    from detector.analysis import engine
    from detector.core.allowlist import Allowlist
    from detector.report import alerts as alerts_
    from detector.report import digest
    from tests import lake
    from tests.unit.helpers import nested, table_bytes

    def ms(*when: int) -> int:
        return int(datetime(*when, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]

    intruder = f"arn:aws:iam::{lake.ACCOUNT}:user/intruder"
    events = [
        lake.event(time_ms=ms(2026, 11, 21, 23, 30)),  # the allowlisted CI role, Saturday night
        lake.event(arn=intruder, session_issuer=None, time_ms=ms(2026, 11, 20, 22, 15)),
    ]
    active = detections.activate([s for s in reversed(detections.registry())])
    result = engine.scan_object(
        io.BytesIO(table_bytes(nested(events, 2))), "x", Allowlist.of([lake.CI_ROLE]), active=active
    )
    rolled = alerts_.rollup(result.findings())
    assert rolled[0].key.principal == lake.CI_ROLE  # alert order alone would lead with it
    message = digest.message(rolled)
    assert "intruder" in message.subject and "2 detections" in message.subject
    email = json_.loads(message.message)["email"]
    default = detections.get(detections.DEFAULT)
    alerted = {a.detection.id for a in rolled}
    others = [d for d in detections.registry().values() if d is not default and d.id in alerted]
    assert others and default.email is not None and all(d.email is not None for d in others)
    first = email.index(default.email.headline + "\n")
    assert all(first < email.index(d.email.headline + "\n") for d in others if d.email)
    body = json_.loads(json_.loads(message.message)["default"])
    assert body["detection"]["id"] == default.id
    registered = [d.id for d in detections.registry().values() if d.id in alerted]
    assert [d["id"] for d in body["detections"]] == registered
