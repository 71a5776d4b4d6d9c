"""ASFF mapping (one finding per alert) and our own validation of Security Hub's limits (moto
enforces none of them)."""

from __future__ import annotations

import copy
import json
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from detector.analysis.findings import Finding
from detector.core.allowlist import Allowlist
from detector.detection import DETECTION
from detector.report import asff, asff_checks
from detector.report.alerts import ALERT_KEYS, Alert, Contribution, rollup
from detector.report.principals import UNKNOWN_PRINCIPAL
from tests import lake
from tests.unit.helpers import parquet_bytes, run_over, scan

ACCOUNT = "444455556666"  # where the Lambda runs
ACTOR_ACCOUNT = lake.ACCOUNT
OTHER_ACCOUNT = "777788889999"
REGION = "eu-west-1"
NOW = datetime(2026, 11, 20, 11, 0, 0, 123456, tzinfo=UTC)
SESSION = f"arn:aws:sts::{ACTOR_ACCOUNT}:assumed-role/dev/alice"
SESSION_2 = f"arn:aws:sts::{ACTOR_ACCOUNT}:assumed-role/dev/bob"
ROLE = f"arn:aws:iam::{ACTOR_ACCOUNT}:role/dev"
IAM_USER = f"arn:aws:iam::{ACTOR_ACCOUNT}:user/intruder"
ROOT = f"arn:aws:iam::{ACTOR_ACCOUNT}:root"
UA = "docker/24.0.7 go/go1.21.3 git-commit/311b9ff os/linux arch/amd64"
# What Security Hub refuses, and what must never reach an analyst's console unescaped.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def make(
    *,
    user: str | None = SESSION,
    account: str | None = ACTOR_ACCOUNT,
    user_agent: str | None = UA,
    src_ip: str | None = "198.51.100.7",
    src_domain: str | None = None,
    region: str | None = "us-east-1",
    count: int = 3,
    succeeded: int | None = None,
    first_ms: int | None = lake.T0_MS,
    last_ms: int | None = lake.T0_MS + 300_123,
    repositories: list[str] | None = None,
    pushed: list[str] | None = None,
    issuers: list[str] | None = None,
    invoked_by: list[str] | None = None,
) -> Finding:
    """One Splunk group; ``pushed`` repositories are those of successful calls."""
    ok = count - 1 if succeeded is None else succeeded
    f = Finding(
        key=("PutImage", user, account, user_agent, src_ip, src_domain, region),
        count=count,
        first_ms=first_ms,
        last_ms=last_ms,
        succeeded=ok,
        failed=count - ok,
    )
    f.repositories.add(pushed or [], priority=True)
    f.repositories.add(["app", "team/api"] if repositories is None else repositories)
    f.image_tags.add(["v1", "latest"])
    f.session_issuers.add([ROLE] if issuers is None else issuers)
    f.principal_ids.add(["AROAEXAMPLE:alice"])
    f.invoked_by.add(invoked_by or [])
    f.event_ids.add(["evt-1", "evt-2"])
    f.objects.add(["s3://lake/" + lake.key_for(2)])
    return f


def one(*findings: Finding) -> Alert:
    alerts = rollup(findings)
    assert len(alerts) == 1, [a.key for a in alerts]
    return alerts[0]


def convert(alert: Alert | Finding, **kw: Any) -> dict[str, Any]:
    if isinstance(alert, Finding):
        alert = one(alert)
    kw.setdefault("account_id", ACCOUNT)
    kw.setdefault("region", REGION)
    kw.setdefault("now", NOW)
    out = asff.to_asff(alert, **kw)
    asff_checks.validate(out)
    return out


def from_events(*events: dict[str, Any], allow: tuple[str, ...] = ()) -> list[Alert]:
    """The alerts the real engine makes of one Security Lake object holding ``events``."""
    result = scan(parquet_bytes(list(events), 2), Allowlist.of(list(allow)))
    return rollup(result.aggregate.findings())


def u16(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def all_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *all_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in all_strings(v)]
    return []


def repo_arns(out: dict[str, Any]) -> list[str]:
    return [r["Id"] for r in out["Resources"] if r["Type"] == "AwsEcrRepository"]


# --- required fields and identity --------------------------------------------------------------


def test_required_fields_and_fixed_values() -> None:
    out = convert(make())
    for name in asff_checks.REQUIRED:
        assert out[name], name
    assert out["SchemaVersion"] == "2018-10-08"
    assert out["ProductArn"] == (
        f"arn:aws:securityhub:{REGION}:{ACCOUNT}:product/{ACCOUNT}/default"
    )
    assert out["GeneratorId"] == DETECTION.id
    assert out["AwsAccountId"] == ACCOUNT
    assert out["CreatedAt"] == out["UpdatedAt"] == "2026-11-20T11:00:00.123Z"
    assert out["Severity"] == {"Label": "MEDIUM", "Original": "49"}
    assert out["Confidence"] == 70 and out["Criticality"] == 70
    assert out["FindingProviderFields"] == {
        "Confidence": 70,
        "Criticality": 70,
        "Severity": {"Label": "MEDIUM", "Original": "49"},
        "Types": out["Types"],
    }
    assert out["Types"][0].startswith("TTPs/Execution/T1204.003")
    assert out["RecordState"] == "ACTIVE"
    assert out["Remediation"]["Recommendation"] == {
        "Text": DETECTION.how_to_respond,
        "Url": DETECTION.references[0],
    }


def test_customer_fields_never_set() -> None:
    alerts = [
        one(make()),
        one(make(user=None, issuers=[], src_ip=None)),
        one(make(user=IAM_USER, issuers=[], user_agent="")),
    ]
    for alert in alerts:
        for created_at in (None, NOW - timedelta(days=3)):
            out = convert(alert, created_at=created_at)
            for owned in asff_checks.CUSTOMER_FIELDS:
                assert owned not in out
            assert "Workflow" not in json.dumps(out)


def test_timestamps_iso_utc_and_observed_times() -> None:
    out = convert(make(), now=datetime(2026, 11, 20, 12, 0, tzinfo=timezone(timedelta(hours=1))))
    assert out["CreatedAt"] == "2026-11-20T11:00:00.000Z"
    assert out["FirstObservedAt"] == "2026-11-20T10:00:00.000Z"
    assert out["LastObservedAt"] == "2026-11-20T10:05:00.123Z"
    call = out["Action"]["AwsApiCallAction"]
    assert (call["FirstSeen"], call["LastSeen"]) == (out["FirstObservedAt"], out["LastObservedAt"])


def test_observed_times_span_every_finding_of_the_alert() -> None:
    early = make(user_agent="curl/8", first_ms=lake.T0_MS - 60_000, last_ms=lake.T0_MS)
    late = make(user_agent="wget/1", first_ms=lake.T0_MS + 5_000, last_ms=lake.T0_MS + 600_000)
    out = convert(one(early, late))
    assert out["FirstObservedAt"] == "2026-11-20T09:59:00.000Z"
    assert out["LastObservedAt"] == "2026-11-20T10:10:00.000Z"


def test_created_at_stable_when_given() -> None:
    alert = one(make())
    created = datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
    first = convert(alert, created_at=created, now=NOW)
    later = convert(alert, created_at=created, now=NOW + timedelta(hours=7))
    assert first["CreatedAt"] == later["CreatedAt"] == "2026-11-01T08:30:00.000Z"
    assert first["UpdatedAt"] == "2026-11-20T11:00:00.123Z"
    assert later["UpdatedAt"] == "2026-11-20T18:00:00.123Z"
    naive = convert(alert, created_at=datetime(2026, 11, 1, 8, 30))  # taken as UTC
    assert naive["CreatedAt"] == "2026-11-01T08:30:00.000Z"


def test_observed_times_omitted_when_unknown() -> None:
    out = convert(make(first_ms=None, last_ms=None))
    assert "FirstObservedAt" not in out and "LastObservedAt" not in out
    assert "FirstSeen" not in out["Action"]["AwsApiCallAction"]
    assert "firstTime" not in out["ProductFields"]


@pytest.mark.parametrize("ms", [10**18, -(10**18)])
def test_absurd_times_are_not_timestamps(ms: int) -> None:
    assert asff._ms_timestamp(ms) is None
    out = convert(make(first_ms=ms, last_ms=ms))
    assert "FirstObservedAt" not in out and "LastObservedAt" not in out


def test_partition() -> None:
    out = convert(make(), partition="aws-cn", region="cn-north-1")
    assert out["ProductArn"].startswith("arn:aws-cn:securityhub:cn-north-1:")
    assert out["Resources"][1]["Id"].startswith("arn:aws-cn:ecr:")
    assert {r["Partition"] for r in out["Resources"]} == {"aws-cn"}


# --- Id: one per (detection, account, principal) ------------------------------------------------


def test_id_is_the_alert_key() -> None:
    alert = one(make())
    out = convert(alert)
    assert out["Id"] == f"{DETECTION.id}/principal/{alert.id}"
    assert out["Id"] == asff.finding_id(alert)
    assert re.fullmatch(re.escape(DETECTION.id) + r"/principal/[0-9a-f]{64}", out["Id"])
    assert len(out["Id"]) <= 512


def test_id_stable_per_principal_whatever_the_caller_varies() -> None:
    base = convert(make())["Id"]
    # Everything a caller chooses freely: counts, time, session name, user agent, source.
    variants = [
        make(count=99),
        make(user=SESSION_2, user_agent="evil/1", src_ip="203.0.113.9", region="eu-west-3"),
        make(user_agent=None, src_ip=None, src_domain="x.example"),
    ]
    for f in variants:
        assert convert(f, now=NOW + timedelta(hours=5))["Id"] == base
    assert convert(one(*variants))["Id"] == base


def test_id_differs_by_account_and_principal() -> None:
    base = convert(make())["Id"]
    ids = {
        base,
        convert(make(account=OTHER_ACCOUNT))["Id"],
        convert(make(account=None))["Id"],
        convert(make(account=""))["Id"],
        convert(make(user=IAM_USER, issuers=[]))["Id"],
        convert(make(user=f"arn:aws:sts::{ACTOR_ACCOUNT}:assumed-role/prod/alice", issuers=[]))[
            "Id"
        ],
    }
    assert len(ids) == 6


def test_id_no_collision_between_shifted_fields() -> None:
    # Concatenating the key's values would make these two keys equal.
    a = make(user="ab", account="c", issuers=[])
    b = make(user="a", account="bc", issuers=[])
    assert convert(a)["Id"] != convert(b)["Id"]


def test_id_through_the_engine_rolls_sessions_up_and_splits_accounts() -> None:
    role = f"arn:aws:iam::{ACTOR_ACCOUNT}:role/builder"
    other_role = f"arn:aws:iam::{OTHER_ACCOUNT}:role/builder"

    def session(account: str, name: str, issuer: str | None, **kw: Any) -> dict[str, Any]:
        return lake.event(
            arn=f"arn:aws:sts::{account}:assumed-role/builder/{name}",
            account=account,
            session_issuer=issuer,
            **kw,
        )

    alerts = from_events(
        session(ACTOR_ACCOUNT, "s1", role, user_agent="a/1"),
        session(ACTOR_ACCOUNT, "s2", role, user_agent="b/2", src_ip="203.0.113.5"),
        session(ACTOR_ACCOUNT, "s3", None),  # no issuer recorded: derived from the session
        session(OTHER_ACCOUNT, "s1", other_role),
    )
    assert len(alerts) == 2
    by_account = {a.key.account: convert(a) for a in alerts}
    mine, theirs = by_account[ACTOR_ACCOUNT], by_account[OTHER_ACCOUNT]
    assert mine["Id"] != theirs["Id"]
    assert mine["Resources"][0]["Id"] == role and mine["Resources"][0]["Type"] == "AwsIamRole"
    assert theirs["Resources"][0]["Id"] == other_role
    assert mine["ProductFields"]["count"] == "3"
    assert mine["ProductFields"]["groups"] == "3"
    # A later run with another session name updates the same finding.
    again = from_events(session(ACTOR_ACCOUNT, "s9", role, user_agent="c/3"))
    assert convert(again[0])["Id"] == mine["Id"]


# --- network and action --------------------------------------------------------------------------


def test_ipv4() -> None:
    out = convert(make(src_ip="198.51.100.7"))
    assert out["Network"] == {"Direction": "IN", "SourceIpV4": "198.51.100.7"}
    call = out["Action"]["AwsApiCallAction"]
    assert out["Action"]["ActionType"] == "AWS_API_CALL"
    assert call["Api"] == "PutImage" and call["ServiceName"] == "ecr.amazonaws.com"
    assert call["CallerType"] == "remoteip"
    assert call["RemoteIpDetails"] == {"IpAddressV4": "198.51.100.7"}
    assert "DomainDetails" not in call


def test_ipv6() -> None:
    out = convert(make(src_ip="2001:DB8::1"))
    assert out["Network"] == {"Direction": "IN", "SourceIpV6": "2001:db8::1"}
    call = out["Action"]["AwsApiCallAction"]
    assert call["CallerType"] == "remoteip"
    assert "RemoteIpDetails" not in call  # ASFF has no IPv6 field there


@pytest.mark.parametrize(
    "zone", ["eth0", "", "\x1b[31m\u202eevil\n", "%%", "x" * 100_000, "\u2028\x00"]
)
def test_ipv6_zone_id_dropped(zone: str) -> None:
    out = convert(make(src_ip=f"fe80::1%{zone}"))
    assert out["Network"] == {"Direction": "IN", "SourceIpV6": "fe80::1"}
    assert "From fe80::1 in us-east-1," in out["Description"]


def test_source_ip_prefers_the_successful_push() -> None:
    failed = make(src_ip="203.0.113.9", count=50, succeeded=0, user_agent="noise/1")
    pushed = make(src_ip="198.51.100.7", count=1, succeeded=1)
    out = convert(one(failed, pushed))
    assert out["Network"]["SourceIpV4"] == "198.51.100.7"
    assert "From 198.51.100.7" in out["Description"]


def test_first_valid_ip_of_the_alert() -> None:
    bad = make(src_ip="AWS Internal", count=9, succeeded=9, user_agent="a")
    good = make(src_ip="2001:db8::7", count=1, succeeded=1, user_agent="b")
    assert convert(one(bad, good))["Network"]["SourceIpV6"] == "2001:db8::7"


def test_aws_service_domain_instead_of_ip() -> None:
    out = convert(
        make(
            user=None,
            src_ip=None,
            src_domain="codebuild.amazonaws.com",
            issuers=[],
            invoked_by=["codebuild.amazonaws.com"],
        )
    )
    assert out["Network"] == {"Direction": "IN", "SourceDomain": "codebuild.amazonaws.com"}
    call = out["Action"]["AwsApiCallAction"]
    assert call["CallerType"] == "domain"
    assert call["DomainDetails"] == {"Domain": "codebuild.amazonaws.com"}
    assert "RemoteIpDetails" not in call


@pytest.mark.parametrize(
    "src_ip", [None, "", "AWS Internal", "999.1.1.1", "1.2.3.4\n", "1.2.3.4%eth0", "%", " ::1"]
)
def test_no_ip(src_ip: str | None) -> None:
    out = convert(make(src_ip=src_ip))
    assert "Network" not in out
    call = out["Action"]["AwsApiCallAction"]
    assert "CallerType" not in call and "RemoteIpDetails" not in call
    if src_ip is not None:
        assert out["ProductFields"]["src_ips"]  # still shown, escaped
        assert not CONTROL.search(out["ProductFields"]["src_ips"])


@pytest.mark.parametrize("domain", ["evil.example\n", "-bad.example", "a" * 200, "x y"])
def test_invalid_source_domain_left_out(domain: str) -> None:
    out = convert(make(user=None, issuers=[], src_ip=None, src_domain=domain))
    assert "Network" not in out
    assert "DomainDetails" not in out["Action"]["AwsApiCallAction"]


# --- resources: the principal --------------------------------------------------------------------


def test_role_session_is_the_role() -> None:
    principal = convert(one(make(), make(user=SESSION_2, user_agent="x")))["Resources"][0]
    assert principal["Type"] == "AwsIamRole"
    assert principal["Id"] == ROLE
    assert principal["Region"] == "us-east-1"
    other = principal["Details"]["Other"]
    assert other["Principal"] == ROLE
    assert other["AccountId"] == ACTOR_ACCOUNT
    assert other["CallerArns"] == f"{SESSION}, {SESSION_2}"


def test_role_session_without_issuer_rolled_up_to_the_derived_role() -> None:
    principal = convert(make(issuers=[]))["Resources"][0]
    assert (principal["Type"], principal["Id"]) == ("AwsIamRole", ROLE)
    assert principal["Details"]["Other"]["CallerArns"] == SESSION


def test_iam_user() -> None:
    principal = convert(make(user=IAM_USER, issuers=[]))["Resources"][0]
    assert (principal["Type"], principal["Id"]) == ("AwsIamUser", IAM_USER)


@pytest.mark.parametrize(
    "arn",
    [
        f"arn:aws:iam::{ACTOR_ACCOUNT}:user/a b",
        f"arn:aws:iam::{ACTOR_ACCOUNT}:user/",
        f"arn:aws:iam::{ACTOR_ACCOUNT}:user/x\n",
        f"arn:aws:iam::{ACTOR_ACCOUNT}:role/é",
        f"arn:aws:iam::{ACTOR_ACCOUNT}:role/" + "r" * 600,
        "arn:aws:iam::1234:user/short-account",
        f"arn:aws:iam::{ACTOR_ACCOUNT}:group/devs",
        f"arn:aws:iam::{ACTOR_ACCOUNT}:user/x/../y:z" + "\x00",
    ],
)
def test_only_well_formed_iam_arns_are_iam_resources(arn: str) -> None:
    principal = convert(make(user=arn, issuers=[]))["Resources"][0]
    assert principal["Type"] == "Other"


def test_iam_user_with_path() -> None:
    arn = f"arn:aws:iam::{ACTOR_ACCOUNT}:user/division_abc/subdivision_xyz/Jane+=,.@-_"
    principal = convert(make(user=arn, issuers=[]))["Resources"][0]
    assert (principal["Type"], principal["Id"]) == ("AwsIamUser", arn)


def test_service_caller_is_other() -> None:
    f = make(user=None, issuers=[], invoked_by=["ecr.amazonaws.com"], src_ip=None)
    principal = convert(f)["Resources"][0]
    assert (principal["Type"], principal["Id"]) == ("Other", "ecr.amazonaws.com")
    assert principal["Details"]["Other"]["Principal"] == "ecr.amazonaws.com"


def test_root_is_other() -> None:
    assert convert(make(user=ROOT, issuers=[]))["Resources"][0] == {
        "Type": "Other",
        "Id": ROOT,
        "Partition": "aws",
        "Region": "us-east-1",
        "Details": {
            "Other": {
                "Principal": ROOT,
                "AccountId": ACTOR_ACCOUNT,
                "CallerArns": ROOT,
                "PrincipalIds": "AROAEXAMPLE:alice",
            }
        },
    }


def test_no_identity_is_the_unknown_principal() -> None:
    f = Finding(key=("PutImage", None, None, None, None, None, None), count=1)
    out = convert(f)
    assert out["Resources"] == [
        {
            "Type": "Other",
            "Id": UNKNOWN_PRINCIPAL,
            "Partition": "aws",
            "Region": REGION,
            "Details": {"Other": {"Principal": UNKNOWN_PRINCIPAL}},
        }
    ]
    assert "Network" not in out
    assert out["ProductFields"]["principal"] == UNKNOWN_PRINCIPAL


def test_no_identity_through_the_engine() -> None:
    alerts = from_events(
        lake.event(
            arn=None,
            principal_id=None,
            user_type=None,
            session_issuer=None,
            src_ip=None,
            src_domain=None,
        )
    )
    assert [a.key.principal for a in alerts] == [UNKNOWN_PRINCIPAL]
    assert convert(alerts[0])["Resources"][0]["Type"] == "Other"


# --- resources: repositories --------------------------------------------------------------------


def test_repositories_are_ecr_resources() -> None:
    resources = convert(make())["Resources"]
    repos = [r for r in resources if r["Type"] == "AwsEcrRepository"]
    assert [r["Id"] for r in repos] == [
        f"arn:aws:ecr:us-east-1:{ACTOR_ACCOUNT}:repository/app",
        f"arn:aws:ecr:us-east-1:{ACTOR_ACCOUNT}:repository/team/api",
    ]
    assert repos[1]["Details"]["AwsEcrRepository"] == {
        "Arn": repos[1]["Id"],
        "RepositoryName": "team/api",
    }


def test_successful_repositories_come_first() -> None:
    f = make(repositories=["aaa", "bbb"], pushed=["zzz"])
    assert repo_arns(convert(f)) == [
        f"arn:aws:ecr:us-east-1:{ACTOR_ACCOUNT}:repository/{n}" for n in ("zzz", "aaa", "bbb")
    ]


def test_repository_arn_falls_back_to_own_account_and_region() -> None:
    repos = repo_arns(convert(make(account=None, region=None)))
    assert repos[0] == f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/app"
    repos = repo_arns(convert(make(account="not-an-account", region="us-east-1\x1b[2J")))
    assert repos[0] == f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/app"


def test_resources_capped_at_32() -> None:
    names = [f"repo-{i:02d}" for i in range(45)]
    out = convert(make(repositories=names))
    assert len(out["Resources"]) == 32
    assert out["Resources"][0]["Type"] == "AwsIamRole"
    assert all(r["Type"] == "AwsEcrRepository" for r in out["Resources"][1:])
    assert len(repo_arns(out)) == 31
    assert "(+40 more)" in out["Description"]


def test_description_says_when_repositories_were_not_all_recorded() -> None:
    names = [f"repo-{i:02d}" for i in range(60)]  # a finding keeps 50
    out = convert(make(repositories=names))
    assert "(+45 more and others not recorded)" in out["Description"]


def test_invalid_repository_names_stay_out_of_arns() -> None:
    out = convert(
        make(repositories=["ok-repo", "Bad Name\x1b[31m", "../etc", "x:y", "a", "b" * 257])
    )
    assert repo_arns(out) == [f"arn:aws:ecr:us-east-1:{ACTOR_ACCOUNT}:repository/ok-repo"]
    assert "Bad Name\\x1b[31m" in out["ProductFields"]["repositories"]


def test_decoys_cannot_hide_the_successful_repository() -> None:
    # 60 failed pushes to decoy repositories, each with its own user agent (60 findings), that
    # sort before the one repository pushed for real; the success comes last in the object.
    decoys = [
        lake.event(
            arn=IAM_USER,
            session_issuer=None,
            user_agent=f"decoy/{i}",
            status="Failure",
            error_code="RepositoryNotFoundException",
            request_json=lake.put_image_request(f"aaa-decoy-{i:02d}", "v1"),
            response_json=None,
        )
        for i in range(60)
    ]
    real = lake.event(
        arn=IAM_USER,
        session_issuer=None,
        request_json=lake.put_image_request("zz-prod", "v9"),
    )
    alerts = from_events(*decoys, real)
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.count, alert.succeeded, alert.failed, alert.groups) == (61, 1, 60, 61)
    out = convert(alert)
    repos = [r for r in out["Resources"] if r["Type"] == "AwsEcrRepository"]
    assert repos[0]["Details"]["AwsEcrRepository"]["RepositoryName"] == "zz-prod"
    # The image the one success wrote comes first, then as many repositories as fit.
    images = [r for r in out["Resources"] if r["Type"] == "AwsEcrContainerImage"]
    assert [i["Details"]["AwsEcrContainerImage"]["RepositoryName"] for i in images] == ["zz-prod"]
    assert len(repos) == 31 - len(images)
    assert "Pushed to: zz-prod." in out["Description"]
    assert out["ProductFields"]["succeeded_repositories"] == "zz-prod"
    assert out["ProductFields"]["repositories"].startswith("zz-prod, aaa-decoy-")
    assert out["ProductFields"]["count"] == "61"


# --- text: limits and hostile data ---------------------------------------------------------------


def test_title_and_description() -> None:
    out = convert(make(pushed=["prod"]))
    assert out["Title"] == DETECTION.message(ROLE)
    d = out["Description"]
    for part in (
        "3 PutImage call(s) (2 succeeded, 1 failed)",
        ROLE,
        "Pushed to: prod.",
        "prod, app, team/api",
        "198.51.100.7",
        "us-east-1",
        f"account {ACTOR_ACCOUNT}",
        "2026-11-20T10:00:00.000Z",
        "2026-11-20T10:05:00.123Z",
        UA,
    ):
        assert part in d, part


def test_hostile_megabyte_values() -> None:
    evil = "\x1b[31mred\x07\r\n\u202etxt.exe\u2028" + "é😀" * 500_000 + "\x00"
    f = make(
        user_agent=evil,
        user=IAM_USER + "\x1b]0;pwned\x07" + "x" * 1_000_000,
        issuers=[],
        repositories=[evil],
    )
    out = convert(f)
    assert u16(out["Title"]) <= 256
    assert u16(out["Description"]) <= 1024
    for value in out["ProductFields"].values():
        assert u16(value) <= 2048
    for resource in out["Resources"]:
        assert u16(resource["Id"]) <= 512
        for value in resource.get("Details", {}).get("Other", {}).values():
            assert u16(value) < 1024
    for text in all_strings(out):
        assert not CONTROL.search(text), text[:80]
    ua = out["ProductFields"]["user_agents"]
    assert ua.startswith("\\x1b[31mred\\x07\\r\\n\\u202etxt.exe\\u2028é😀")
    assert ua.endswith("…")
    assert out["Resources"][0]["Type"] == "Other"  # not a valid IAM user ARN any more
    assert len(json.dumps(out).encode()) < 240 * 1024


def test_astral_characters_counted_as_two() -> None:
    out = convert(make(user="😀" * 300, issuers=[]))
    assert u16(out["Title"]) <= 256
    assert len(out["Title"]) < 256  # would pass a naive code point check only


def test_lone_surrogates_are_escaped() -> None:
    # Parquet cannot hold a lone surrogate, but request JSON can spell one ("\\ud800"), which
    # stays as its escaped text; a Finding built by hand may hold a real one.
    f = make(repositories=["\\ud800evil", "\ud800real"], user_agent="\udfff")
    out = convert(f)
    assert out["ProductFields"]["repositories"] == "\\ud800evil, \\ud800real"
    assert out["ProductFields"]["user_agents"] == "\\udfff"
    json.dumps(out, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("blank", ["", " ", "\t", "\u00a0", "\u3000"])
def test_blank_values_stay_visible_and_valid(blank: str) -> None:
    out = convert(make(user_agent=blank, region=blank, account=blank))
    fields = out["ProductFields"]
    for name in ("user_agents", "regions", "actor.user.account.uid"):
        assert fields[name].strip(), name
        assert fields[name] != blank


def test_empty_string_differs_from_null_in_product_fields() -> None:
    assert convert(make(user_agent=""))["ProductFields"]["user_agents"] == '""'
    assert "user_agents" not in convert(make(user_agent=None))["ProductFields"]


# --- issue 10: poisoned alerts ------------------------------------------------------------------

ZONE_POISON = "fe80::1%\x1b[31m\u202eevil\n"
HOSTILE = [
    "",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\u2028",
    "\u2029",
    "\u00a0",
    "\u3000",
    "\x00",
    "\x07",
    "\x1b[2J\x1b[31m",
    "\x1c\x1d\x1e\x1f",
    "\x85",
    "\u202e",
    "\u2066",
    "\u200b",
    "\ufeff",
    "\ue000",
    "\uffff",
    "\ud800",
    "\udfff",
    "a\ud83d",
    "😀" * 700,
    "é" * 3000,
    "x" * 10_000,
    "UA " + "\x1b\x07" * 5_000,
    ZONE_POISON,
    "fe80::1%",
    "::1%%",
    "1.2.3.4%eth0",
    "%",
    "None",
    "null",
    "-",
    '{"values": ["x"], "total": 1}',
    "arn:",
    "arn:aws:iam::111122223333:user/\n",
    "arn:aws:iam::111122223333:role/\u2028",
    "arn:aws:sts::111122223333:assumed-role/r/" + "\x1b" * 5_000,
    "arn:aws:sts::1:assumed-role/r/s",
    "arn:aws:iam::111122223333:user/" + "u" * 3_000,
    "ecr.amazonaws.com",
    "us-east-1\n",
    "111122223333",
    "\\ud800",
]
PARQUET_SAFE = [v for v in HOSTILE if not re.search(r"[\ud800-\udfff]", v)]


def assert_clean(out: dict[str, Any]) -> None:
    asff_checks.validate(out)
    for text in all_strings(out):
        assert not CONTROL.search(text), repr(text[:80])
    assert len(json.dumps(out, ensure_ascii=False).encode("utf-8")) <= asff_checks.MAX_FINDING_BYTES


def test_poison_zone_id_and_hostile_values_through_the_engine() -> None:
    ua = "Mozilla/5.0 " + "".join(chr(c) for c in range(32)) * 300 + "\u2028" * 100  # 10 KB
    alerts = from_events(
        lake.event(arn=IAM_USER, session_issuer=None, src_ip=ZONE_POISON, user_agent=ua),
        lake.event(arn=IAM_USER, session_issuer=None, src_ip=" ", user_agent=""),
        lake.event(arn=IAM_USER, session_issuer=None, src_ip="", user_agent="\t \u2029"),
        lake.event(
            arn=IAM_USER,
            session_issuer=None,
            src_ip=None,
            region="\u2028",
            request_json=lake.put_image_request("repo\x1b[0m\n", "\u202etag"),
        ),
    )
    assert len(alerts) == 1
    out = asff.to_asff(alerts[0], account_id=ACCOUNT, region=REGION, now=NOW)
    assert_clean(out)
    assert out["Network"] == {"Direction": "IN", "SourceIpV6": "fe80::1"}
    assert out["ProductFields"]["count"] == "4"
    assert "evil" in out["ProductFields"]["src_ips"]  # shown, escaped
    assert "\\x1b[31m\\u202eevil\\n" in out["ProductFields"]["src_ips"]


def test_poison_property_findings_built_by_hand() -> None:
    """Many alerts from random hostile values (fixed seed): every one is a valid finding."""
    rng = random.Random(10)

    def pick() -> str | None:
        r = rng.random()
        if r < 0.15:
            return None
        if r < 0.8:
            return rng.choice(HOSTILE)
        return "".join(rng.choice(HOSTILE) for _ in range(rng.randint(2, 4)))

    checked = 0
    for _ in range(150):
        findings = []
        for _ in range(rng.randint(1, 4)):
            count = rng.randint(1, 5)
            ok = rng.randint(0, count)
            f = Finding(
                key=("PutImage", pick(), pick(), pick(), pick(), pick(), pick()),
                count=count,
                first_ms=rng.choice([None, 0, -5, 10**18, lake.T0_MS]),
                last_ms=rng.choice([None, lake.T0_MS + 1, 10**19]),
                succeeded=ok,
                failed=count - ok,
            )
            f.repositories.add([pick() for _ in range(rng.randint(0, 3))], priority=True)
            f.repositories.add([pick() for _ in range(rng.randint(0, 3))])
            f.image_tags.add([pick() for _ in range(rng.randint(0, 3))])
            f.session_issuers.add([pick() for _ in range(rng.randint(0, 2))])
            f.invoked_by.add([pick() for _ in range(rng.randint(0, 2))])
            f.event_ids.add([pick() for _ in range(rng.randint(0, 2))])
            findings.append(f)
        for alert in rollup(findings):
            out = asff.to_asff(alert, account_id=ACCOUNT, region=REGION, now=NOW)
            assert_clean(out)
            assert out["ProductFields"]["count"] == str(alert.count)
            ips = out.get("Network", {})
            assert "%" not in ips.get("SourceIpV6", "") and "%" not in ips.get("SourceIpV4", "")
            checked += 1
    assert checked > 150


def test_poison_property_through_the_engine() -> None:
    """One object of hostile events (fixed seed), rolled up: every alert is a valid finding."""
    rng = random.Random(7)

    def pick() -> str | None:
        return None if rng.random() < 0.1 else rng.choice(PARQUET_SAFE)

    principals = [IAM_USER, ROOT, SESSION, None, *PARQUET_SAFE[:12]]
    events = [
        lake.event(
            arn=rng.choice(principals),
            session_issuer=rng.choice([None, ROLE, pick()]),
            account=rng.choice([ACTOR_ACCOUNT, OTHER_ACCOUNT, pick()]),
            user_agent=pick(),
            src_ip=rng.choice([ZONE_POISON, "198.51.100.7", pick()]),
            src_domain=pick(),
            region=pick(),
            invoked_by=rng.choice([None, pick()]),
            status=rng.choice(["Success", "Failure", None]),
            request_json=rng.choice(
                [None, "{not json", lake.put_image_request(pick() or "x", pick())]
            ),
        )
        for _ in range(300)
    ]
    run = run_over([("hostile.gz.parquet", parquet_bytes(events, 2))])
    alerts = rollup(run.findings())
    assert len(alerts) > 10
    assert sum(a.count for a in alerts) == 300
    for alert in alerts:
        out = asff.to_asff(alert, account_id=ACCOUNT, region=REGION, now=NOW)
        assert_clean(out)
        assert out["ProductFields"]["count"] == str(alert.count)
        assert out["Id"] == f"{DETECTION.id}/principal/{alert.id}"
    assert len({a.id for a in alerts}) == len(alerts)


# --- product fields -------------------------------------------------------------------------------


def test_product_fields_mirror_the_alert_record() -> None:
    early = make(pushed=["prod"], first_ms=lake.T0_MS - 1000)
    other = make(user=SESSION_2, user_agent="curl/8", src_ip="203.0.113.9", count=4)
    alert = one(early, other)
    record = alert.to_record(asff.FIELD_LIMITS)
    fields = convert(alert)["ProductFields"]
    assert all(isinstance(v, str) and v for v in fields.values())
    assert set(fields) <= set(record)
    assert fields["principal"] == ROLE
    assert fields["count"] == str(alert.count) == "7"
    assert fields["succeeded"] == "5" and fields["failed"] == "2"
    assert fields["groups"] == "2"
    assert fields["actor.user.account.uid"] == ACTOR_ACCOUNT
    assert fields["firstTime"] == record["firstTime"] == "2026-11-20T09:59:59"
    assert fields["repositories"] == "prod, app, team/api"
    assert fields["succeeded_repositories"] == "prod"
    assert fields["image_tags"] == "latest, v1"
    assert fields["sessions"] == f"{SESSION_2}, {SESSION}"  # the busier finding first
    assert set(fields["src_ips"].split(", ")) == {"198.51.100.7", "203.0.113.9"}
    assert set(fields["user_agents"].split(", ")) == {UA, "curl/8"}
    assert fields["event_ids"] == "evt-1, evt-2"
    assert fields["alert_id"] == alert.id
    assert fields["reason"] == "new"
    assert fields["detection_id"] == DETECTION.id
    assert fields["severity"] == "medium"
    assert fields["risk_score"] == "49"
    assert "truncated" not in fields  # nothing was cut
    assert "findings" not in fields and "message" not in fields
    for key in ALERT_KEYS:
        if key not in ("findings", "truncated"):
            assert key in fields, key
    assert len(fields) <= asff.OWN_PRODUCT_FIELDS
    assert all(re.fullmatch(r"[A-Za-z0-9 _./:+=@-]{1,128}", k) for k in fields)


def test_product_fields_count_is_the_alert_total_not_a_sample() -> None:
    # 300 groups (one per user agent): the alert keeps exact totals, the samples are capped.
    findings = [make(user_agent=f"ua/{i}", count=2, succeeded=1) for i in range(300)]
    alert = one(*findings)
    fields = convert(alert)["ProductFields"]
    assert fields["count"] == "600"
    assert fields["succeeded"] == "300" and fields["failed"] == "300"
    assert fields["groups"] == "300"
    assert len(fields["user_agents"].split(", ")) == asff.FIELD_LIMITS.values
    assert fields["truncated"] == "user_agents"


def test_product_fields_with_totals_from_the_state_table() -> None:
    alert = one(make())
    total = alert.with_totals(Contribution(count=1234, succeeded=1000, failed=234))
    fields = convert(total)["ProductFields"]
    assert (fields["count"], fields["succeeded"], fields["failed"]) == ("1234", "1000", "234")
    assert "1234 PutImage call(s) (1000 succeeded, 234 failed)" in convert(total)["Description"]


def test_product_fields_omit_nulls_and_empty_lists() -> None:
    f = Finding(key=("PutImage", None, None, None, None, None, None), count=1)
    fields = convert(f)["ProductFields"]
    for absent in ("actor.user.account.uid", "firstTime", "repositories", "user_agents"):
        assert absent not in fields, absent
    assert fields["count"] == "1"


def test_product_fields_counts_many_repositories() -> None:
    names = [f"r{i:03d}-{'x' * 60}" for i in range(60)]
    fields = convert(make(repositories=names))["ProductFields"]
    assert u16(fields["repositories"]) <= 2048
    assert "repositories" in fields["truncated"].split(", ")


def test_product_fields_drop_unsafe_keys() -> None:
    record = {"ok": 1, "aws/securityhub/FindingId": "x", "bad key\n": "v", "": "v", "n": None}
    assert asff.product_fields(record) == {"ok": "1"}


# --- validate -----------------------------------------------------------------------------------


def valid() -> dict[str, Any]:
    return convert(make())


def broken(change: Any) -> dict[str, Any]:
    out = copy.deepcopy(valid())
    change(out)
    return out


def _set(path: str, value: Any) -> Any:
    def change(out: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = out
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def _many_fields(out: dict[str, Any]) -> None:
    out["ProductFields"] = {f"k{i}": "v" for i in range(51)}


def _del(name: str) -> Any:
    return lambda out: out.pop(name)


CASES = [
    ("Title", _set("Title", "t" * 257)),
    ("Title", _set("Title", "   ")),
    ("Title", _set("Title", "line\nbreak")),
    ("Title", _set("Title", "lone \udc00 surrogate")),
    ("Title", _set("Title", 7)),
    ("Description", _set("Description", "d" * 1025)),
    ("Description", _set("Description", "😀" * 513)),
    ("Resources", _set("Resources", [])),
    ("Resources", lambda out: out.__setitem__("Resources", out["Resources"][:1] * 33)),
    ("Resources[0].Id", _set("Resources.0.Id", "")),
    ("Resources[0].Type", _set("Resources.0.Type", "t" * 257)),
    ("Resources[0].Region", _set("Resources.0.Region", "x" * 17)),
    ("Resources[0].Partition", _set("Resources.0.Partition", "mars")),
    ("Resources[0].Details.Other", _set("Resources.0.Details.Other.AccountId", "v" * 1024)),
    ("Resources[0].Details.Other", _set("Resources.0.Details.Other.P\u2028", "v")),
    ("ProductFields", _many_fields),
    ("ProductFields key", _set("ProductFields." + "k" * 129, "v")),
    ("ProductFields.user_agents", _set("ProductFields.user_agents", "v" * 2049)),
    ("ProductFields.count", _set("ProductFields.count", 3)),
    ("ProductFields.principal", _set("ProductFields.principal", "")),
    ("ProductFields.principal", _set("ProductFields.principal", "a\x1bb")),
    ("Remediation.Recommendation.Text", _set("Remediation.Recommendation.Text", "r" * 513)),
    ("Severity.Label", _set("Severity", {"Label": "SEVERE"})),
    ("FindingProviderFields.Severity.Label", _set("FindingProviderFields.Severity.Label", "x")),
    ("Confidence", _set("Confidence", 101)),
    ("Confidence", _set("Confidence", True)),
    ("FindingProviderFields.Criticality", _set("FindingProviderFields.Criticality", -1)),
    ("Types[0]", _set("Types", ["Bogus/Namespace"])),
    ("Types", _set("Types", ["TTPs/x"] * 51)),
    ("CreatedAt", _set("CreatedAt", "yesterday")),
    ("UpdatedAt", _set("UpdatedAt", "2026-11-20 11:00:00")),
    ("AwsAccountId", _set("AwsAccountId", "1234")),
    ("ProductArn", _set("ProductArn", "arn:aws:securityhub:eu-west-1:444455556666:product/x")),
    ("SchemaVersion", _set("SchemaVersion", "2020-01-01")),
    ("Id", _set("Id", "i" * 513)),
    ("Id", _set("Id", "id\u2029")),
    ("GeneratorId", _set("GeneratorId", "g" * 513)),
    ("Network.Direction", _set("Network.Direction", "SIDEWAYS")),
    ("Network.SourceDomain", _set("Network.SourceDomain", " ")),
    ("Action.AwsApiCallAction.Api", _set("Action.AwsApiCallAction.Api", "a" * 129)),
    ("Action.AwsApiCallAction.FirstSeen", _set("Action.AwsApiCallAction.FirstSeen", "now")),
    ("Workflow", _set("Workflow", {"Status": "NEW"})),
    ("WorkflowState", _set("WorkflowState", "NEW")),
    ("Note", _set("Note", {"Text": "x", "UpdatedBy": "me", "UpdatedAt": "2026-01-01T00:00:00Z"})),
    ("UserDefinedFields", _set("UserDefinedFields", {"a": "b"})),
    ("VerificationState", _set("VerificationState", "TRUE_POSITIVE")),
    (
        "Action.AwsApiCallAction.DomainDetails.Domain",
        _set("Action.AwsApiCallAction.DomainDetails", {"Domain": "d" * 129}),
    ),
    (
        "finding",
        _set(
            "Resources.1.Details.AwsEcrRepository.RepositoryPolicyText",
            "p" * (240 * 1024),
        ),
    ),
    ("finding", _set("Resources.1.Details.AwsEcrRepository.Size", float("nan"))),
    ("finding", _set("Resources.1.Details.AwsEcrRepository.When", datetime(2026, 1, 1))),
    *[(name, _del(name)) for name in asff_checks.REQUIRED],
]


@pytest.mark.parametrize(
    ("field", "change"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_validate_names_the_broken_field(field: str, change: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(f"ASFF {field}")):
        asff_checks.validate(broken(change))


def test_validate_accepts_limits_exactly() -> None:
    out = valid()
    out["Title"] = "t" * 256
    out["Description"] = "😀" * 512
    out["ProductFields"] = {f"k{i:02d}": "v" * 2048 for i in range(49)} | {"k" * 128: "v"}
    out["Resources"] = out["Resources"][:1] * 32
    out["Resources"][0] = copy.deepcopy(out["Resources"][0])
    out["Resources"][0]["Details"]["Other"] = {f"o{i}": "v" * 1023 for i in range(50)}
    out["Remediation"]["Recommendation"]["Text"] = "r" * 512
    out["Id"] = "i" * 512
    asff_checks.validate(out)
