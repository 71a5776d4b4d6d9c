"""Alerts: who a finding's principal is, the rollup per (account, principal), exact totals,
ordering, and the bounded JSON form (``Alert.to_record``)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable

import pytest

from detector.analysis.findings import MAX_VALUES, Finding
from detector.detection import DETECTION
from detector.lake.schema import GROUP_KEYS
from detector.report import alerts
from detector.report.alerts import NEW, Alert, Limits, rollup
from detector.report.principals import UNKNOWN_PRINCIPAL, AlertKey, principal_of
from tests.contract import ALERT_KEYS, JSONL_KEYS, SAMPLE_NAMES
from tests.lake import ACCOUNT, T0_MS, event, put_image_request
from tests.unit.helpers import parquet_bytes, run_over, scan

OTHER_ACCOUNT = "444455556666"
USER = f"arn:aws:iam::{ACCOUNT}:user/old-contractor"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/builder"
SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/builder/session-1"


def finding(
    user: str | None = USER,
    *,
    account: str | None = ACCOUNT,
    user_agent: str | None = "docker/24.0.7",
    src_ip: str | None = "198.51.100.7",
    src_domain: str | None = None,
    region: str | None = "us-east-1",
    count: int = 1,
    succeeded: int = 0,
    failed: int | None = None,
    first_ms: int | None = T0_MS,
    last_ms: int | None = None,
    issuers: Iterable[str] = (),
    invoked_by: Iterable[str] = (),
    repositories: Iterable[str] = (),
    ok_repositories: Iterable[str] = (),
    tags: Iterable[str] = (),
    event_ids: Iterable[str] = (),
) -> Finding:
    """One Splunk group, built directly (no Parquet) so thousands stay cheap."""
    values = {
        "operation": "PutImage",
        "user": user,
        "account": account,
        "user_agent": user_agent,
        "src_ip": src_ip,
        "src_domain": src_domain,
        "region": region,
    }
    f = Finding(
        key=tuple(values[k] for k in GROUP_KEYS),
        count=count,
        first_ms=first_ms,
        last_ms=first_ms if last_ms is None else last_ms,
        succeeded=succeeded,
        failed=count - succeeded if failed is None else failed,
    )
    f.session_issuers.add(list(issuers))
    f.invoked_by.add(list(invoked_by))
    f.repositories.add(list(ok_repositories), priority=True)
    f.repositories.add(list(repositories))
    f.image_tags.add(list(tags))
    f.event_ids.add(list(event_ids))
    return f


def one_alert(findings: Iterable[Finding]) -> Alert:
    (alert,) = rollup(findings)
    return alert


# --- the principal ---------------------------------------------------------------------------


def test_iam_user_is_its_own_principal():
    assert principal_of(finding(USER)) == USER


def test_iam_user_ignores_a_recorded_issuer():
    # Only sessions are folded into their issuer; a user ARN names one identity already.
    assert principal_of(finding(USER, issuers=[ROLE])) == USER


def test_assumed_role_session_is_its_issuer():
    assert principal_of(finding(SESSION, issuers=[ROLE])) == ROLE


@pytest.mark.parametrize(
    ("session", "role"),
    [
        (SESSION, ROLE),
        (
            "arn:aws-cn:sts::210987654321:assumed-role/deployer/i-0abc",
            "arn:aws-cn:iam::210987654321:role/deployer",
        ),
        (
            "arn:aws-us-gov:sts::123456789012:assumed-role/R.x_y-z/a/b/c",
            "arn:aws-us-gov:iam::123456789012:role/R.x_y-z",
        ),
    ],
)
def test_assumed_role_without_issuer_derives_the_role_arn(session, role):
    assert principal_of(finding(session)) == role


def test_role_with_a_path_is_matched_by_name():
    with_path = f"arn:aws:iam::{ACCOUNT}:role/teams/platform/builder"
    other = f"arn:aws:iam::{ACCOUNT}:role/a-first-in-sort-order"
    assert principal_of(finding(SESSION, issuers=[other, with_path])) == with_path


def test_assumed_role_with_an_unrelated_issuer_uses_the_session_role():
    # The session ARN names its role; an issuer of another name is not this session's.
    other = f"arn:aws:iam::{ACCOUNT}:role/something-else"
    assert principal_of(finding(SESSION, issuers=[other])) == ROLE


def test_no_caller_arn_with_issuer_is_the_issuer():
    assert principal_of(finding(None, issuers=[ROLE])) == ROLE


def test_empty_caller_arn_with_issuer_is_the_issuer():
    assert principal_of(finding("", issuers=[ROLE])) == ROLE


def test_invoked_by_only():
    assert principal_of(finding(None, invoked_by=["ecs.amazonaws.com"])) == "ecs.amazonaws.com"


def test_empty_names_are_skipped():
    f = finding("", issuers=[""], invoked_by=["", "ecs.amazonaws.com"])
    assert principal_of(f) == "ecs.amazonaws.com"


def test_src_domain_only():
    f = finding(None, src_ip=None, src_domain="codebuild.amazonaws.com")
    assert principal_of(f) == "codebuild.amazonaws.com"


def test_caller_arn_wins_over_invoked_by_and_domain():
    f = finding(USER, invoked_by=["ecs.amazonaws.com"], src_domain="x.amazonaws.com")
    assert principal_of(f) == USER


@pytest.mark.parametrize("user", [None, ""])
def test_nothing_recorded_is_the_unknown_principal(user):
    assert principal_of(finding(user, src_ip=None, src_domain=None)) == UNKNOWN_PRINCIPAL


def test_principal_through_the_engine():
    events = [
        event(arn=SESSION, session_issuer=ROLE),
        event(arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/builder/session-2", session_issuer=None),
        event(
            arn=None,
            session_issuer=None,
            invoked_by="ecs.amazonaws.com",
            user_type="AWSService",
            principal_id=None,
        ),
        event(arn=USER, session_issuer=None),
    ]
    result = scan(parquet_bytes(events, 2))
    found = {principal_of(f) for f in result.aggregate.findings()}
    assert found == {ROLE, "ecs.amazonaws.com", USER}
    assert len(rollup(result.aggregate.findings())) == 3


# --- the key ---------------------------------------------------------------------------------


def test_alert_id_is_stable_and_separates_missing_from_empty_account():
    a = AlertKey(DETECTION.id, ACCOUNT, ROLE)
    assert a.id == AlertKey(DETECTION.id, ACCOUNT, ROLE).id
    assert len(a.id) == 64 and int(a.id, 16) >= 0
    ids = {
        a.id,
        AlertKey(DETECTION.id, None, ROLE).id,
        AlertKey(DETECTION.id, "", ROLE).id,
        AlertKey(DETECTION.id, OTHER_ACCOUNT, ROLE).id,
        AlertKey(DETECTION.id, ACCOUNT, USER).id,
        AlertKey("other-detection", ACCOUNT, ROLE).id,
    }
    assert len(ids) == 6


def test_alert_id_of_hostile_principal():
    key = AlertKey(DETECTION.id, ACCOUNT, "x\ud800\x00\u202e")  # a lone surrogate, even
    assert len(key.id) == 64


# --- rollup ----------------------------------------------------------------------------------


def test_same_principal_in_two_accounts_is_two_alerts():
    found = rollup([finding(USER, account=ACCOUNT), finding(USER, account=OTHER_ACCOUNT)])
    assert sorted((a.key.account, a.key.principal) for a in found) == [
        (ACCOUNT, USER),
        (OTHER_ACCOUNT, USER),
    ]
    assert {a.id for a in found} == {
        AlertKey(DETECTION.id, ACCOUNT, USER).id,
        AlertKey(DETECTION.id, OTHER_ACCOUNT, USER).id,
    }


def test_missing_account_is_its_own_alert():
    found = rollup([finding(USER, account=None), finding(USER, account=ACCOUNT)])
    assert sorted((a.key.account or "-") for a in found) == ["-", ACCOUNT]


def test_fifty_sessions_of_one_role_are_one_alert():
    sessions = [f"arn:aws:sts::{ACCOUNT}:assumed-role/builder/s-{i:02d}" for i in range(50)]
    findings = [finding(s, issuers=[ROLE] if i % 2 else ()) for i, s in enumerate(sessions)]
    alert = one_alert(findings)
    assert alert.key == AlertKey(DETECTION.id, ACCOUNT, ROLE)
    assert (alert.count, alert.groups) == (50, 50)
    values, total, more = alert.sample("sessions")
    assert sorted(values) == sessions and total == 50 and not more
    rec = alert.to_record(Limits(values=50))
    assert sorted(rec["sessions"]["values"]) == sessions
    assert rec["sessions"]["total"] == 50
    assert rec["truncated"]["sessions"] is False


def test_many_user_agents_do_not_multiply_alerts():
    findings = [finding(USER, user_agent=f"agent/{i}") for i in range(3000)]
    alert = one_alert(findings)
    assert (alert.groups, alert.count) == (3000, 3000)
    rec = alert.to_record()
    assert rec["user_agents"]["total"] == 3000
    assert len(rec["user_agents"]["values"]) == Limits().values
    assert rec["truncated"]["user_agents"] is True
    assert len(rec["findings"]["values"]) == Limits().findings
    assert rec["findings"]["total"] == 3000
    assert rec["truncated"]["findings"] is True


def test_totals_are_exact_over_thousands_of_findings():
    rng = random.Random(7)
    principals = [f"arn:aws:iam::{ACCOUNT}:user/u{i}" for i in range(5)]
    findings = []
    for i in range(4000):
        count = rng.randint(1, 1000)
        ok = rng.randint(0, count)
        bad = rng.randint(0, count - ok)  # the rest had no recorded status
        first = T0_MS + rng.randint(-(10**9), 10**9)
        findings.append(
            finding(
                rng.choice(principals),
                account=rng.choice([ACCOUNT, OTHER_ACCOUNT]),
                user_agent=f"ua-{i}",
                count=count,
                succeeded=ok,
                failed=bad,
                first_ms=first,
                last_ms=first + rng.randint(0, 10**6),
            )
        )
    found = rollup(findings)
    assert len(found) == 10
    for a in found:
        mine = [
            f for f in findings if (f.field("account"), f.user) == (a.key.account, a.key.principal)
        ]
        assert a.groups == len(mine)
        assert a.count == sum(f.count for f in mine)
        assert a.succeeded == sum(f.succeeded for f in mine)
        assert a.failed == sum(f.failed for f in mine)
        assert a.first_ms == min(f.first_ms for f in mine if f.first_ms is not None)
        assert a.last_ms == max(f.last_ms for f in mine if f.last_ms is not None)
        rec = a.to_record()
        assert (rec["count"], rec["succeeded"], rec["failed"], rec["groups"]) == (
            a.count,
            a.succeeded,
            a.failed,
            len(mine),
        )
        assert (rec["first_ms"], rec["last_ms"]) == (a.first_ms, a.last_ms)
        assert rec["findings"]["total"] == len(mine)
    assert sum(a.count for a in found) == sum(f.count for f in findings)
    assert alerts.totals(found) == (10, sum(f.count for f in findings))


def test_missing_times_do_not_hide_known_ones():
    alert = one_alert([finding(first_ms=None), finding(first_ms=5_000, last_ms=9_000)])
    assert (alert.first_ms, alert.last_ms) == (5_000, 9_000)


def test_alerts_with_a_successful_push_first_then_by_count():
    found = rollup(
        [
            finding("arn:aws:iam::1:user/busy-failing", count=100),
            finding("arn:aws:iam::1:user/one-push", count=1, succeeded=1),
            finding("arn:aws:iam::1:user/few-failing", count=5),
            finding("arn:aws:iam::1:user/many-pushes", count=3, succeeded=3),
            finding("arn:aws:iam::1:user/b-tie", count=5),
            finding("arn:aws:iam::1:user/busy-failing", count=1, user_agent="curl"),
        ]
    )
    assert [a.key.principal.rsplit("/", 1)[1] for a in found] == [
        "many-pushes",
        "one-push",
        "busy-failing",
        "b-tie",
        "few-failing",
    ]
    assert found[2].count == 101


def test_rollup_order_does_not_depend_on_input_order():
    findings = [finding(f"arn:aws:iam::1:user/u{i}", count=i % 3 + 1) for i in range(30)]
    expected = [a.key for a in rollup(findings)]
    random.Random(1).shuffle(findings)
    assert [a.key for a in rollup(findings)] == expected


def test_findings_inside_an_alert_successful_first():
    alert = one_alert(
        [
            finding(USER, user_agent="busy", count=50),
            finding(USER, user_agent="pushed", count=1, succeeded=1),
        ]
    )
    assert [f.field("user_agent") for f in alert.ordered()] == ["pushed", "busy"]
    rec = alert.to_record()
    assert [f["user_agent"] for f in rec["findings"]["values"]] == ["pushed", "busy"]
    assert rec["user_agents"]["values"] == ["pushed", "busy"]


def test_findings_sorted_once_however_often_rendered(monkeypatch: pytest.MonkeyPatch):
    calls = []
    original = alerts._finding_order

    def counting(f: Finding) -> object:
        calls.append(f)
        return original(f)

    monkeypatch.setattr(alerts, "_finding_order", counting)
    alert = one_alert([finding(user_agent=f"ua{i}", repositories=[f"r{i}"]) for i in range(300)])
    for limits in (Limits(), Limits(values=5, findings=2), Limits(values=0, findings=0)):
        alert.to_record(limits)
    for name in SAMPLE_NAMES:
        alert.sample(name)
    assert len(calls) == 300  # one sort key per finding: the ordering is computed once


def test_cached_samples_follow_added_findings_and_are_not_shared():
    alert = one_alert([finding(user_agent="a")])
    values, total, _ = alert.sample("user_agents")
    assert (values, total) == (["a"], 1)
    values.append("mutated by a caller")
    alert.ordered().clear()
    assert alert.sample("user_agents")[0] == ["a"]
    assert len(alert.ordered()) == 1
    alert.add(finding(user_agent="b", succeeded=1))
    assert alert.sample("user_agents")[:2] == (["b", "a"], 2)
    assert alert.to_record()["user_agents"] == {"values": ["b", "a"], "total": 2}
    alert.findings.append(finding(user_agent="c"))  # even behind add's back
    assert alert.sample("user_agents")[1] == 3
    shown = alert.with_totals(alerts.Contribution(9, 1, 8, 1, 2))
    assert shown.sample("user_agents") == alert.sample("user_agents")


# --- totals from the state -------------------------------------------------------------------


def test_contribution_and_with_totals():
    alert = one_alert([finding(count=3, succeeded=1, first_ms=10, last_ms=20)])
    part = alert.contribution()
    assert (part.count, part.succeeded, part.failed, part.first_ms, part.last_ms) == (
        3,
        1,
        2,
        10,
        20,
    )
    shown = alert.with_totals(alerts.Contribution(30, 4, 26, 1, 99))
    assert (shown.count, shown.succeeded, shown.failed, shown.first_ms, shown.last_ms) == (
        30,
        4,
        26,
        1,
        99,
    )
    assert shown.groups == 1 and shown.key == alert.key
    assert alert.count == 3  # the original is unchanged


# --- the JSON form ---------------------------------------------------------------------------


def test_record_keys_stable_and_in_order():
    rec = one_alert([finding()]).to_record()
    assert list(rec)[: len(ALERT_KEYS)] == ALERT_KEYS
    assert list(alerts.ALERT_KEYS) == ALERT_KEYS
    for name in SAMPLE_NAMES:
        assert set(rec[name]) == {"values", "total"}
    assert set(rec["truncated"]) == {
        *SAMPLE_NAMES,
        *alerts.ADDED_SAMPLES,
        *(s.name for s in DETECTION.extra_samples),
        "error_codes",
        "findings",
        "text",
    }
    for name in alerts.ADDED_SAMPLES:  # added after the stable keys
        assert list(rec).index(name) > len(ALERT_KEYS)
        assert set(rec[name]) == {"values", "total"}
    assert not any(rec["truncated"].values())
    (f,) = rec["findings"]["values"]
    assert list(f)[: len(JSONL_KEYS)] == JSONL_KEYS
    assert (f["succeeded"], f["failed"]) == (0, 1)
    assert rec["reason"] == NEW
    assert rec["alert_id"] == AlertKey(DETECTION.id, ACCOUNT, USER).id
    assert rec["detection_id"] == DETECTION.id
    # Every call of this alert failed: severity by outcome (the spec's severity_failed_only).
    assert (rec["severity"], rec["risk_score"]) == (
        DETECTION.severity_failed_only or DETECTION.severity,
        DETECTION.risk_score,
    )
    assert rec["message"] == DETECTION.message(USER)
    assert rec["firstTime"] == rec["lastTime"] == "2026-11-20T10:00:00"


def test_samples_capped_by_limits_with_exact_totals():
    findings = [
        finding(
            f"arn:aws:sts::{ACCOUNT}:assumed-role/builder/s{i}",
            issuers=[ROLE],
            user_agent=f"ua{i % 7}",
            src_ip=f"203.0.113.{i % 9}",
            region=["us-east-1", "eu-west-1", "ap-south-1"][i % 3],
            repositories=[f"repo-{i % 11}"],
            tags=[f"v{i % 13}"],
            event_ids=[f"evt-{i}"],
        )
        for i in range(40)
    ]
    alert = one_alert(findings)
    limits = Limits(values=4, findings=3, text=512)
    rec = alert.to_record(limits)
    expected_totals = {
        "repositories": 11,
        "image_tags": 13,
        "user_agents": 7,
        "src_ips": 9,
        "sessions": 40,
        "regions": 3,
        "event_ids": 40,
    }
    for name, total in expected_totals.items():
        assert rec[name]["total"] == total, name
        assert len(rec[name]["values"]) == min(total, 4), name
        assert rec["truncated"][name] is (total > 4), name
    assert len(rec["findings"]["values"]) == 3 and rec["findings"]["total"] == 40
    assert rec["truncated"]["findings"] is True
    assert rec["truncated"]["text"] is False
    wide = alert.to_record(Limits(values=100, findings=100))
    assert rec["regions"]["total"] == wide["regions"]["total"] == 3
    assert not any(wide["truncated"][n] for n in SAMPLE_NAMES)
    assert wide["truncated"]["findings"] is False


def test_zero_limits_keep_totals():
    alert = one_alert([finding(user_agent=f"ua{i}", repositories=["r"]) for i in range(5)])
    rec = alert.to_record(Limits(values=0, findings=0, text=64))
    assert rec["user_agents"] == {"values": [], "total": 5}
    assert rec["findings"] == {"values": [], "total": 5}
    assert rec["count"] == 5
    assert rec["truncated"]["user_agents"] and rec["truncated"]["findings"]


def test_sample_says_when_a_finding_saw_more_than_it_kept():
    repos = [f"decoy-{i:03d}" for i in range(MAX_VALUES + 10)]
    alert = one_alert([finding(repositories=repos)])
    values, total, more = alert.sample("repositories")
    assert len(values) == total == MAX_VALUES and more
    rec = alert.to_record(Limits(values=100))
    assert rec["truncated"]["repositories"] is True  # nothing cut here, but the finding did


def test_strings_cut_at_the_text_limit_and_said_so():
    long = USER + "x" * 1000
    alert = one_alert([finding(long, user_agent="u" * 100, repositories=["r" * 70])])
    rec = alert.to_record(Limits(text=64))
    assert len(rec["principal"]) == 64 and rec["principal"].endswith("…")
    assert rec["principal"].startswith(USER)
    assert rec["user_agents"]["values"] == ["u" * 63 + "…"]
    assert rec["repositories"]["values"] == ["r" * 63 + "…"]
    assert rec["sessions"]["values"][0] == rec["principal"]
    assert rec["findings"]["values"][0]["user"] == rec["principal"]
    assert rec["truncated"]["text"] is True
    assert rec["alert_id"] == AlertKey(DETECTION.id, ACCOUNT, long).id  # of the whole name
    exact = alert.to_record(Limits(text=2000))
    assert exact["principal"] == long and exact["truncated"]["text"] is False


def test_string_at_the_limit_is_not_cut():
    rec = one_alert([finding(user_agent="u" * 64)]).to_record(Limits(text=64))
    assert rec["user_agents"]["values"] == ["u" * 64]
    assert rec["truncated"]["text"] is False


def test_successful_repositories_first_then_the_rest():
    alert = one_alert(
        [
            finding(repositories=["a-decoy", "b-decoy"], count=60),
            finding(
                user_agent="other",
                ok_repositories=["z-prod"],
                repositories=["a-decoy"],
                succeeded=1,
            ),
        ]
    )
    assert alert.succeeded_values() == ["z-prod"]
    rec = alert.to_record(Limits(values=1))
    assert rec["repositories"] == {"values": ["z-prod"], "total": 3}
    assert rec["succeeded_repositories"] == {"values": ["z-prod"], "total": 1}
    assert alert.to_record()["repositories"]["values"] == ["z-prod", "a-decoy", "b-decoy"]


def test_decoys_through_the_engine_keep_the_successful_push_first():
    caller = f"arn:aws:iam::{ACCOUNT}:user/intruder"
    decoys = [
        event(
            arn=caller,
            session_issuer=None,
            status="Failure",
            request_json=put_image_request(f"decoy/r{i:02d}", "x"),
            time_ms=T0_MS + i,
        )
        for i in range(60)
    ]
    push = event(
        arn=caller,
        session_issuer=None,
        status="Success",
        request_json=put_image_request("prod/payments-api", "latest"),
        time_ms=T0_MS + 1000,
    )
    run = run_over([("a", parquet_bytes(decoys, 2)), ("b", parquet_bytes([push], 1))])
    alert = one_alert(run.findings())
    assert (alert.count, alert.succeeded, alert.failed) == (61, 1, 60)
    rec = alert.to_record(Limits(values=1))
    assert rec["repositories"]["values"] == ["prod/payments-api"]
    assert rec["succeeded_repositories"]["values"] == ["prod/payments-api"]
    assert rec["truncated"]["repositories"] is True


HOSTILE = [
    "\x00\x1b[2J\r\n",
    "\u202eevil\u2066",
    "\u2028\u2029",
    "\ud800",  # a lone surrogate (escaped JSON in the data can hold one)
    "😀é",
    '"}], "x": {"',
    "</script><script>",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_record_with_hostile_values_is_ascii_json(value: str):
    alert = one_alert(
        [
            finding(
                USER + value,
                account=ACCOUNT + value,
                user_agent=value * 300,
                src_ip=value,
                src_domain=value,
                region=value,
                repositories=[value],
                ok_repositories=["ok" + value],
                tags=[value],
                event_ids=[value],
            )
        ]
    )
    rec = alert.to_record(Limits(text=128))
    text = json.dumps(rec)
    assert text.isascii()
    text.encode("ascii")
    back = json.loads(text)
    assert back["principal"] == USER + value
    assert back["actor.user.account.uid"] == ACCOUNT + value
    assert back["src_ips"]["values"] == [value]
    assert back["repositories"]["values"] == ["ok" + value, value]
    assert back["succeeded_repositories"]["values"] == ["ok" + value]
    assert len(back["user_agents"]["values"][0]) <= 128


@pytest.mark.parametrize("ms", [10**20, -(10**20), 253_402_300_800_000])
def test_time_outside_the_datetime_range_gives_none(ms: int):
    alert = one_alert([finding(first_ms=ms, last_ms=ms)])
    rec = alert.to_record()
    assert rec["firstTime"] is None and rec["lastTime"] is None
    assert rec["first_ms"] == rec["last_ms"] == ms  # the raw value is kept
    assert rec["findings"]["values"][0]["firstTime"] is None
    json.dumps(rec)


def test_one_time_in_range_one_outside():
    alert = one_alert([finding(first_ms=-(10**20), last_ms=T0_MS)])
    rec = alert.to_record()
    assert rec["firstTime"] is None
    assert rec["lastTime"] == "2026-11-20T10:00:00"


def test_record_size_is_bounded_whatever_the_data():
    big = "x" * 10_000
    findings = [
        finding(
            USER + big,
            user_agent=f"{i}{big}",
            src_ip=f"{i}{big}",
            repositories=[f"{i}-{j}{big}" for j in range(MAX_VALUES)],
            tags=[f"{i}-{j}{big}" for j in range(MAX_VALUES)],
        )
        for i in range(20)
    ]
    rec = one_alert(findings).to_record(Limits(values=5, findings=2, text=100))
    # 8 samples of 5 values, 2 findings of 7 strings, a few names: all cut at 100 characters.
    assert len(json.dumps(rec)) < 10_000
    assert rec["truncated"]["text"] is True
    assert (rec["count"], rec["groups"]) == (20, 20)
