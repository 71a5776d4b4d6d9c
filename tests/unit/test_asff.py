"""ASFF mapping and our own validation of Security Hub's limits (moto enforces none of them)."""

from __future__ import annotations

import copy
import io
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from detector import asff
from detector.allowlist import Allowlist
from detector.detection import DETECTION
from detector.engine import scan_object
from detector.findings import KEY_NAMES, Finding
from tests import lake
from tests.contract import JSONL_KEYS

ACCOUNT = "444455556666"  # where the Lambda runs
ACTOR_ACCOUNT = lake.ACCOUNT
REGION = "eu-west-1"
NOW = datetime(2026, 11, 20, 11, 0, 0, 123456, tzinfo=UTC)
SESSION = f"arn:aws:sts::{ACTOR_ACCOUNT}:assumed-role/dev/alice"
ROLE = f"arn:aws:iam::{ACTOR_ACCOUNT}:role/dev"
IAM_USER = f"arn:aws:iam::{ACTOR_ACCOUNT}:user/intruder"
UA = "docker/24.0.7 go/go1.21.3 git-commit/311b9ff os/linux arch/amd64"
CONTRACT_KEYS = JSONL_KEYS
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def make(
    *,
    user: str | None = SESSION,
    account: str | None = ACTOR_ACCOUNT,
    user_agent: str | None = UA,
    src_ip: str | None = "198.51.100.7",
    src_domain: str | None = None,
    region: str | None = "us-east-1",
    count: int = 3,
    first_ms: int | None = lake.T0_MS,
    last_ms: int | None = lake.T0_MS + 300_123,
    repositories: list[str] | None = None,
    issuers: list[str] | None = None,
    invoked_by: list[str] | None = None,
) -> Finding:
    f = Finding(
        key=("PutImage", user, account, user_agent, src_ip, src_domain, region),
        count=count,
        first_ms=first_ms,
        last_ms=last_ms,
        succeeded=count - 1,
        failed=1,
    )
    f.repositories.add(["app", "team/api"] if repositories is None else repositories)
    f.image_tags.add(["v1", "latest"])
    f.session_issuers.add([ROLE] if issuers is None else issuers)
    f.principal_ids.add(["AROAEXAMPLE:alice"])
    f.invoked_by.add(invoked_by or [])
    f.event_ids.add(["evt-1", "evt-2"])
    f.objects.add(["s3://lake/" + lake.key_for(2)])
    return f


def convert(finding: Finding, **kw: Any) -> dict[str, Any]:
    kw.setdefault("account_id", ACCOUNT)
    kw.setdefault("region", REGION)
    kw.setdefault("now", NOW)
    out = asff.to_asff(finding, **kw)
    asff.validate(out)
    return out


def u16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def all_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *all_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in all_strings(v)]
    return []


# --- required fields and identity --------------------------------------------------------------


def test_required_fields_and_fixed_values() -> None:
    out = convert(make())
    for name in asff.REQUIRED:
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
    for owned in ("Workflow", "WorkflowState", "Note", "UserDefinedFields", "VerificationState"):
        assert owned not in out


def test_timestamps_iso_utc_and_observed_times() -> None:
    out = convert(make(), now=datetime(2026, 11, 20, 12, 0, tzinfo=timezone(timedelta(hours=1))))
    assert out["CreatedAt"] == "2026-11-20T11:00:00.000Z"
    assert out["FirstObservedAt"] == "2026-11-20T10:00:00.000Z"
    assert out["LastObservedAt"] == "2026-11-20T10:05:00.123Z"
    call = out["Action"]["AwsApiCallAction"]
    assert (call["FirstSeen"], call["LastSeen"]) == (out["FirstObservedAt"], out["LastObservedAt"])


def test_observed_times_omitted_when_unknown() -> None:
    out = convert(make(first_ms=None, last_ms=None))
    assert "FirstObservedAt" not in out and "LastObservedAt" not in out
    assert "FirstSeen" not in out["Action"]["AwsApiCallAction"]
    assert "firstTime" not in out["ProductFields"]


@pytest.mark.parametrize("ms", [10**18, -(10**18)])
def test_absurd_times_are_not_timestamps(ms: int) -> None:
    assert asff._ms_timestamp(ms) is None


def test_partition() -> None:
    out = convert(make(), partition="aws-cn", region="cn-north-1")
    assert out["ProductArn"].startswith("arn:aws-cn:securityhub:cn-north-1:")
    assert out["Resources"][1]["Id"].startswith("arn:aws-cn:ecr:")
    assert {r["Partition"] for r in out["Resources"]} == {"aws-cn"}


def test_id_is_deterministic_per_key() -> None:
    a = convert(make(), now=NOW)
    b = convert(make(count=99), now=NOW + timedelta(hours=5))
    assert a["Id"] == b["Id"]
    assert a["Id"].startswith(DETECTION.id + "/")
    assert len(a["Id"]) <= 512
    assert convert(make(src_ip="198.51.100.8"))["Id"] != a["Id"]
    assert convert(make(user=IAM_USER))["Id"] != a["Id"]


def test_id_tells_null_from_empty_string() -> None:
    ids = {
        convert(make(user_agent=None))["Id"],
        convert(make(user_agent=""))["Id"],
        convert(make(user_agent="None"))["Id"],
        convert(make(user_agent="null"))["Id"],
    }
    assert len(ids) == 4


def test_id_no_collision_between_shifted_fields() -> None:
    # Concatenating values would make these two keys equal.
    a = make(user="ab", account="c")
    b = make(user="a", account="bc")
    assert convert(a)["Id"] != convert(b)["Id"]


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


@pytest.mark.parametrize("src_ip", [None, "", "AWS Internal", "999.1.1.1", "1.2.3.4\n"])
def test_no_ip(src_ip: str | None) -> None:
    out = convert(make(src_ip=src_ip))
    assert "Network" not in out
    call = out["Action"]["AwsApiCallAction"]
    assert "CallerType" not in call and "RemoteIpDetails" not in call
    if src_ip:
        assert out["ProductFields"]["src_ip"]  # still shown, escaped


# --- resources -----------------------------------------------------------------------------------


def test_role_session_is_the_role() -> None:
    principal = convert(make())["Resources"][0]
    assert principal["Type"] == "AwsIamRole"
    assert principal["Id"] == ROLE
    other = principal["Details"]["Other"]
    assert other["CallerArn"] == SESSION
    assert other["AccountId"] == ACTOR_ACCOUNT
    assert other["PrincipalId"] == "AROAEXAMPLE:alice"
    assert other["SessionIssuer"] == ROLE


def test_role_session_without_issuer_keeps_session_arn() -> None:
    principal = convert(make(issuers=[]))["Resources"][0]
    assert (principal["Type"], principal["Id"]) == ("AwsIamRole", SESSION)


def test_iam_user() -> None:
    principal = convert(make(user=IAM_USER, issuers=[]))["Resources"][0]
    assert (principal["Type"], principal["Id"]) == ("AwsIamUser", IAM_USER)


def test_service_caller_is_other() -> None:
    f = make(user=None, issuers=[], invoked_by=["ecr.amazonaws.com"], src_ip=None)
    principal = convert(f)["Resources"][0]
    assert (principal["Type"], principal["Id"]) == ("Other", "ecr.amazonaws.com")
    assert principal["Details"]["Other"]["InvokedBy"] == "ecr.amazonaws.com"


def test_root_and_unknown_callers_are_other() -> None:
    root = f"arn:aws:iam::{ACTOR_ACCOUNT}:root"
    assert convert(make(user=root, issuers=[]))["Resources"][0] == {
        "Type": "Other",
        "Id": root,
        "Partition": "aws",
        "Region": "us-east-1",
        "Details": {
            "Other": {
                "CallerArn": root,
                "AccountId": ACTOR_ACCOUNT,
                "PrincipalId": "AROAEXAMPLE:alice",
            }
        },
    }
    f = Finding(key=("PutImage", None, None, None, None, None, None), count=1)
    out = convert(f)
    assert out["Resources"] == [
        {
            "Type": "Other",
            "Id": "(no caller identity recorded)",
            "Partition": "aws",
            "Region": REGION,
        }
    ]
    assert "Network" not in out


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


def test_repository_arn_falls_back_to_own_account_and_region() -> None:
    repos = convert(make(account=None, region=None))["Resources"][1:]
    assert repos[0]["Id"] == f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/app"
    repos = convert(make(account="not-an-account", region="us-east-1\x1b[2J"))["Resources"][1:]
    assert repos[0]["Id"] == f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/app"


def test_resources_capped_at_32() -> None:
    names = [f"repo-{i:02d}" for i in range(45)]
    out = convert(make(repositories=names))
    assert len(out["Resources"]) == 32
    assert out["Resources"][0]["Type"] == "AwsIamRole"
    assert all(r["Type"] == "AwsEcrRepository" for r in out["Resources"][1:])
    assert "(+40 more)" in out["Description"]


def test_description_says_when_repositories_were_not_all_recorded() -> None:
    names = [f"repo-{i:02d}" for i in range(60)]  # a finding keeps 50
    out = convert(make(repositories=names))
    assert "(+45 more and others not recorded)" in out["Description"]


def test_invalid_repository_names_stay_out_of_arns() -> None:
    out = convert(make(repositories=["ok-repo", "Bad Name\x1b[31m", "../etc", "x:y"]))
    ids = [r["Id"] for r in out["Resources"][1:]]
    assert ids == [f"arn:aws:ecr:us-east-1:{ACTOR_ACCOUNT}:repository/ok-repo"]
    assert "Bad Name\\x1b[31m" in out["ProductFields"]["repositories"]


# --- text: limits and hostile data ---------------------------------------------------------------


def test_title_and_description() -> None:
    out = convert(make())
    assert out["Title"] == DETECTION.message(SESSION)
    d = out["Description"]
    for part in (
        "3 PutImage call(s) (2 succeeded, 1 failed)",
        SESSION,
        "app, team/api",
        "198.51.100.7",
        "us-east-1",
        "2026-11-20T10:00:00.000Z",
        "2026-11-20T10:05:00.123Z",
        UA,
    ):
        assert part in d


def test_hostile_megabyte_user_agent() -> None:
    evil = "\x1b[31mred\x07\r\n\u202etxt.exe\u2028" + "é😀" * 500_000 + "\x00"
    out = convert(make(user_agent=evil, user=IAM_USER + "\x1b]0;pwned\x07" + "x" * 1_000_000))
    assert u16(out["Title"]) <= 256
    assert u16(out["Description"]) <= 1024
    for value in out["ProductFields"].values():
        assert u16(value) <= 2048
    assert u16(out["Resources"][0]["Id"]) <= 512
    for value in out["Resources"][0]["Details"]["Other"].values():
        assert u16(value) < 1024
    for text in all_strings(out):
        assert not CONTROL.search(text), text[:80]
    ua = out["ProductFields"]["user_agent"]
    assert ua.startswith("\\x1b[31mred\\x07\\r\\n\\u202etxt.exe\\u2028é😀")
    assert ua.endswith("…")
    assert len(json.dumps(out).encode()) < 240 * 1024


def test_astral_characters_counted_as_two() -> None:
    out = convert(make(user="😀" * 300, issuers=[]))
    assert u16(out["Title"]) <= 256
    assert len(out["Title"]) < 256  # would pass a naive code point check only


def test_lone_surrogate_from_request_json_is_escaped() -> None:
    # A JSON escape of a lone surrogate ("\\ud800") in request JSON stays as its escaped text
    # (schema._unescape), since it cannot be encoded as UTF-8; ASFF keeps it readable.
    f = make(repositories=["\\ud800evil"])
    assert f.to_record()["repositories"] == ["\\ud800evil"]
    out = convert(f)
    assert out["ProductFields"]["repositories"] == "\\ud800evil"
    json.dumps(out, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_blank_values_stay_visible_and_valid(blank: str) -> None:
    out = convert(make(user_agent=blank))
    assert out["ProductFields"]["user_agent"].strip()
    assert "user_agent" in out["ProductFields"]


def test_empty_string_differs_from_null_in_product_fields() -> None:
    assert convert(make(user_agent=""))["ProductFields"]["user_agent"] == '""'
    assert "user_agent" not in convert(make(user_agent=None))["ProductFields"]


# --- product fields -------------------------------------------------------------------------------


def test_product_fields_mirror_the_json_record() -> None:
    f = make(src_domain="ecr.amazonaws.com")
    record = f.to_record()
    fields = convert(f)["ProductFields"]
    assert all(isinstance(v, str) and v for v in fields.values())
    assert set(fields) <= set(record)
    assert list(KEY_NAMES.values()) == CONTRACT_KEYS[:7]
    for key in CONTRACT_KEYS:
        assert fields[key] == str(record[key]), key
    assert fields["count"] == "3"
    assert fields["repositories"] == "app, team/api"
    assert fields["image_tags"] == "latest, v1"
    assert fields["succeeded"] == "2" and fields["failed"] == "1"
    assert fields["event_ids"] == "evt-1, evt-2"
    assert fields["source_objects"].startswith("s3://lake/aws/CLOUD_TRAIL_MGMT/2.0/")
    assert fields["detection_id"] == DETECTION.id
    assert fields["risk_score"] == "49"
    assert fields["samples_truncated"] == "false"
    assert len(fields) <= 50
    assert all(re.fullmatch(r"[A-Za-z0-9 _./:+=@-]{1,128}", k) for k in fields)


def test_product_fields_omit_nulls_and_empty_lists() -> None:
    f = Finding(key=("PutImage", None, None, None, None, None, None), count=1)
    fields = convert(f)["ProductFields"]
    assert "user" not in fields and "firstTime" not in fields and "repositories" not in fields
    assert fields["count"] == "1"


def test_product_fields_counts_many_repositories() -> None:
    names = [f"r{i:03d}-{'x' * 60}" for i in range(60)]
    fields = convert(make(repositories=names))["ProductFields"]
    assert u16(fields["repositories"]) <= 2048
    assert fields["samples_truncated"] == "true"


# --- from a real Security Lake object -----------------------------------------------------------


def test_from_security_lake_object() -> None:
    buf = io.BytesIO()
    lake.write_object(
        buf,
        [
            lake.event(),  # allowlisted CI role
            lake.event(arn=IAM_USER, session_issuer=None, user_agent="curl/8\x1b[0m"),
            lake.event(arn=IAM_USER, session_issuer=None, src_ip="2001:db8::7"),
        ],
        2,
    )
    buf.seek(0)
    result = scan_object(buf, "obj", Allowlist.of([lake.CI_ROLE]))
    findings = result.aggregate.findings()
    assert len(findings) == 2
    out = [convert(f) for f in findings]
    assert len({o["Id"] for o in out}) == 2
    assert sum(int(o["ProductFields"]["count"]) for o in out) == 2
    assert {o["Resources"][0]["Type"] for o in out} == {"AwsIamUser"}
    assert any("SourceIpV6" in o.get("Network", {}) for o in out)


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
    ("Description", _set("Description", "d" * 1025)),
    ("Description", _set("Description", "😀" * 513)),
    ("Resources", _set("Resources", [])),
    ("Resources", lambda out: out.__setitem__("Resources", out["Resources"][:1] * 33)),
    ("Resources[0].Id", _set("Resources.0.Id", "")),
    ("Resources[0].Region", _set("Resources.0.Region", "x" * 17)),
    ("Resources[0].Details.Other", _set("Resources.0.Details.Other.AccountId", "v" * 1024)),
    ("ProductFields", _many_fields),
    ("ProductFields key", _set("ProductFields." + "k" * 129, "v")),
    ("ProductFields.user_agent", _set("ProductFields.user_agent", "v" * 2049)),
    ("ProductFields.count", _set("ProductFields.count", 3)),
    ("ProductFields.user", _set("ProductFields.user", "")),
    ("Remediation.Recommendation.Text", _set("Remediation.Recommendation.Text", "r" * 513)),
    ("Severity.Label", _set("Severity", {"Label": "SEVERE"})),
    ("FindingProviderFields.Severity.Label", _set("FindingProviderFields.Severity.Label", "x")),
    ("Confidence", _set("Confidence", 101)),
    ("FindingProviderFields.Criticality", _set("FindingProviderFields.Criticality", -1)),
    ("Types[0]", _set("Types", ["Bogus/Namespace"])),
    ("CreatedAt", _set("CreatedAt", "yesterday")),
    ("AwsAccountId", _set("AwsAccountId", "1234")),
    ("ProductArn", _set("ProductArn", "arn:aws:securityhub:eu-west-1:444455556666:product/x")),
    ("SchemaVersion", _set("SchemaVersion", "2020-01-01")),
    ("Id", _set("Id", "i" * 513)),
    ("Workflow", _set("Workflow", {"Status": "NEW"})),
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
    *[(name, _del(name)) for name in asff.REQUIRED],
]


@pytest.mark.parametrize(
    ("field", "change"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_validate_names_the_broken_field(field: str, change: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(f"ASFF {field}")):
        asff.validate(broken(change))


def test_validate_accepts_limits_exactly() -> None:
    out = valid()
    out["Title"] = "t" * 256
    out["Description"] = "d" * 1024
    out["ProductFields"] = {f"k{i:02d}": "v" * 2048 for i in range(49)} | {"k" * 128: "v"}
    out["Resources"] = out["Resources"][:1] * 32
    out["Remediation"]["Recommendation"]["Text"] = "r" * 512
    asff.validate(out)
