"""The `ecr-upload-detector scan` command: outputs, exit codes, S3 input (moto)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from detector import detections
from detector.app.cli import main
from tests import lake
from tests.contract import JSONL_KEYS

STABLE_KEYS = JSONL_KEYS
INTRUDER = f"arn:aws:iam::{lake.ACCOUNT}:user/intruder"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def allowlist(tmp_path: Path) -> Path:
    path = tmp_path / "allowlist.txt"
    path.write_text(f"# CI\n{lake.CI_ROLE}\n")
    return path


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    for version in (1, 2):
        path = root / lake.key_for(version)
        path.parent.mkdir(parents=True)
        lake.write_object(
            path,
            [
                lake.event(),  # CI role session: trusted
                lake.event(arn=INTRUDER, session_issuer=None, time_ms=lake.T0_MS + version * 1000),
                lake.event(operation="GetAuthorizationToken", arn=INTRUDER, request_json=None),
            ],
            version,
        )
    return root


def test_jsonl_has_the_stable_keys_first_and_counts_both_versions(lake_dir: Path, allowlist: Path):
    code, out, err = run("scan", str(lake_dir), "--allowlist", str(allowlist), "--format", "jsonl")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 1
    rec = records[0]
    assert list(rec)[:10] == STABLE_KEYS
    assert rec["user"] == INTRUDER
    assert rec["count"] == 2  # one from each schema version
    assert rec["firstTime"] == "2026-11-20T10:00:01"
    assert rec["lastTime"] == "2026-11-20T10:00:02"
    assert rec["repositories"] == ["app"]
    assert len(rec["source_objects"]) == 2


def test_json_document_carries_detection_and_inputs(lake_dir: Path, allowlist: Path):
    code, out, _ = run("scan", str(lake_dir), "--allowlist", str(allowlist), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["detection"]["id"] == "886a8f46-d7e2-4439-b9ba-aec238e31732"
    assert doc["detection"]["risk_score"] == 49
    assert doc["inputs"] == {"objects": 2, "rows": 6, "unreadable": []}
    assert [f["user"] for f in doc["findings"]] == [INTRUDER]


def test_table_is_default_and_reports_no_findings_plainly(lake_dir: Path, tmp_path: Path):
    trust_all = tmp_path / "all.txt"
    trust_all.write_text(
        f"arn:aws:sts::{lake.ACCOUNT}:assumed-role/*\narn:aws:iam::{lake.ACCOUNT}:*\n"
    )
    code, out, _ = run("scan", str(lake_dir), "--allowlist", str(trust_all))
    assert code == 0
    assert out.startswith("No findings")


def test_table_escapes_terminal_control_sequences(tmp_path: Path, allowlist: Path):
    path = tmp_path / "x.parquet"
    lake.write_object(
        path,
        [lake.event(arn=INTRUDER, session_issuer=None, user_agent="evil\x1b[2J\x1b]0;pwned\x07")],
        2,
    )
    code, out, _ = run("scan", str(path), "--allowlist", str(allowlist))
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J" in out


def test_one_bad_object_is_named_and_the_rest_still_reported(lake_dir: Path, allowlist: Path):
    bad = lake_dir / "aws" / "broken.parquet"
    bad.write_bytes(b"id,name\n1,x\n")
    code, out, err = run("scan", str(lake_dir), "--allowlist", str(allowlist), "--format", "jsonl")
    assert code == 1
    assert len(out.splitlines()) == 1  # the good objects' finding is still printed
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad}: not Parquet (no PAR1 magic at the start)"]
    assert "Traceback" not in err


def test_missing_path_is_an_unreadable_input(allowlist: Path, tmp_path: Path):
    code, _, err = run("scan", str(tmp_path / "nope"), "--allowlist", str(allowlist))
    assert code == 3  # nothing read (1 before: as if the rest had been scanned)
    assert "nope: no such file or directory" in err


def test_directory_without_parquet_is_reported(allowlist: Path, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    code, _, err = run("scan", str(tmp_path / "empty"), "--allowlist", str(allowlist))
    assert code == 3
    assert "no Parquet objects found" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["scan", "x.parquet"],  # no --allowlist
        ["scan", "--allowlist", "a.txt"],  # no PATH
        ["scan", "x.parquet", "--allowlist", "a.txt", "--format", "xml"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]):
    code, _, _ = run(*argv)
    assert code == 2


def test_unreadable_or_invalid_allowlist_exits_2(lake_dir: Path, tmp_path: Path):
    code, _, err = run("scan", str(lake_dir), "--allowlist", str(tmp_path / "missing.txt"))
    assert code == 2 and "cannot read allowlist" in err
    garbage = tmp_path / "garbage.txt"
    garbage.write_text('["not closed", ')
    code, _, err = run("scan", str(lake_dir), "--allowlist", str(garbage))
    assert code == 2 and "garbage.txt" in err and "JSON" in err


def test_empty_allowlist_warns_and_reports_everyone(lake_dir: Path, tmp_path: Path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody yet\n")
    code, out, err = run("scan", str(lake_dir), "--allowlist", str(empty), "--format", "jsonl")
    assert code == 0
    assert "allowlist" in err and "empty" in err
    users = {json.loads(line)["user"] for line in out.splitlines()}
    assert INTRUDER in users and len(users) == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal(lake_dir: Path, allowlist: Path):
    argv = ["scan", str(lake_dir), "--allowlist", str(allowlist), "--format", "jsonl"]
    quiet = io.StringIO()
    main(argv, out=io.StringIO(), err=quiet)
    assert quiet.getvalue() == ""
    tty = _Terminal()
    main(argv, out=io.StringIO(), err=tty)
    assert "2/2 objects, 6 rows" in tty.getvalue()


def test_python_dash_m_is_the_same_command(lake_dir: Path, allowlist: Path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "detector",
            "scan",
            str(lake_dir),
            "--allowlist",
            str(allowlist),
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["user"] == INTRUDER


@mock_aws
def test_scan_an_s3_prefix_skipping_iceberg_metadata(
    allowlist: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="aws-security-data-lake-us-east-1-abc")
    for version in (1, 2):
        buf = io.BytesIO()
        lake.write_object(buf, [lake.event(arn=INTRUDER, session_issuer=None)], version)
        s3.put_object(
            Bucket="aws-security-data-lake-us-east-1-abc",
            Key=lake.key_for(version),
            Body=buf.getvalue(),
        )
    s3.put_object(
        Bucket="aws-security-data-lake-us-east-1-abc",
        Key="aws/CLOUD_TRAIL_MGMT/2.0/metadata/00001-abc.metadata.json",
        Body=b"{}",
    )
    code, out, err = run(
        "scan",
        "s3://aws-security-data-lake-us-east-1-abc/aws/CLOUD_TRAIL_MGMT/",
        "--allowlist",
        str(allowlist),
        "--format",
        "jsonl",
    )
    assert code == 0, err
    rec = json.loads(out)
    assert rec["count"] == 2
    assert all(
        o.startswith("s3://aws-security-data-lake-us-east-1-abc/aws/")
        for o in rec["source_objects"]
    )


@mock_aws
def test_s3_bucket_that_does_not_exist_is_named(allowlist: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    code, out, err = run("scan", "s3://no-such-bucket/aws/", "--allowlist", str(allowlist))
    assert code == 3 and out == ""
    assert "s3://no-such-bucket/aws/: cannot list: NoSuchBucket" in err


@mock_aws
def test_scan_of_an_s3_prefix_builds_one_client(allowlist: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    for i in range(3):
        buf = io.BytesIO()
        lake.write_object(buf, [lake.event(arn=INTRUDER, session_issuer=None)], 2)
        s3.put_object(Bucket="lake", Key=lake.key_for(2, name=f"o{i}"), Body=buf.getvalue())
    import detector.aws.s3 as adapter

    built = []
    real = adapter.boto3.client

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(adapter.boto3, "client", counting)
    code, out, _ = run("scan", "s3://lake/aws/", "--allowlist", str(allowlist), "--format", "jsonl")
    assert code == 0 and json.loads(out)["count"] == 3
    assert len(built) == 1  # not one client per object


# --- output a terminal can take --------------------------------------------------------------

# CSI and OSC as C1 controls, NEL, DEL, the line and paragraph separators, bidi overrides and
# isolates: each would be obeyed by a terminal, reorder the text, or split a record in two for
# a reader using str.splitlines(). The readable part must stay as it is.
HOSTILE = "evil\x9b2J\x9d0;pwned\x07 \x85\u2028\u2029 \u202etxt.exe\u2066x\u2069\x7f\u061c"
READABLE = "café 日本 😀"


def raw_unsafe(text: str) -> list[str]:
    unsafe = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}
    return [ch for ch in text if ch != "\n" and unicodedata.category(ch) in unsafe]


@pytest.fixture
def hostile_dir(tmp_path: Path) -> Path:
    root = tmp_path / "hostile"
    root.mkdir()
    lake.write_object(
        root / "x.parquet",
        [
            lake.event(
                arn=INTRUDER,
                session_issuer=None,
                user_agent=f"{HOSTILE} {READABLE}",
                request_json=lake.put_image_request(f"repo{HOSTILE}", f"tag{HOSTILE}"),
            )
        ],
        2,
    )
    # An unreadable object whose name is hostile too: named in the JSON and on stderr.
    (root / "bad\x1b]0;x\x07\u202e.parquet").write_bytes(b"not parquet")
    return root


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_json_output_escapes_controls_and_decodes_to_the_data(
    hostile_dir: Path, allowlist: Path, fmt: str
):
    code, out, err = run("scan", str(hostile_dir), "--allowlist", str(allowlist), "--format", fmt)
    assert code == 1  # the bad object
    assert raw_unsafe(out) == [] and raw_unsafe(err) == []
    assert READABLE in out  # not \u-escaped: still readable
    if fmt == "jsonl":
        assert len(out.splitlines()) == 1  # one finding, one line, by Python's rules too
        rec = json.loads(out)
    else:
        doc = json.loads(out)
        [rec] = doc["findings"]
        [bad] = doc["inputs"]["unreadable"]
        assert "bad\x1b]0;x\x07\u202e.parquet" in bad
    assert rec["user_agent"] == f"{HOSTILE} {READABLE}"
    assert rec["repositories"] == [f"repo{HOSTILE}"]
    assert rec["image_tags"] == [f"tag{HOSTILE}"]


def test_table_and_suggest_allowlist_show_the_same_characters_escaped(
    hostile_dir: Path, allowlist: Path
):
    _, table, _ = run("scan", str(hostile_dir), "--allowlist", str(allowlist))
    _, suggested, _ = run("suggest-allowlist", str(hostile_dir))
    for text in (table, suggested):
        assert raw_unsafe(text) == []
        # The user agent (table) or the repository (the reviewer's comment), escaped.
        assert "evil\\x9b2J\\x9d0;pwned\\x07 \\x85\\u2028" in text
    # Header, one row, a blank line, the summary, and that one input was not read.
    assert len(table.splitlines()) == 5
    assert table.splitlines()[-1].startswith("Only 1 of 2 inputs read")
    assert INTRUDER in suggested.splitlines()  # the entry itself is untouched


def test_a_file_name_that_is_not_utf8_still_makes_valid_json(tmp_path: Path, allowlist: Path):
    """Python decodes such a name with lone surrogates (``bad\\udcff``): written raw, they
    either fail the write to a UTF-8 stdout or put invalid UTF-8 into the output."""
    try:
        with open(os.path.join(os.fsencode(tmp_path), b"bad\xff.parquet"), "wb") as f:
            f.write(b"not parquet")
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    lake.write_object(tmp_path / "x.parquet", [lake.event(arn=INTRUDER, session_issuer=None)], 2)
    buffer = io.BytesIO()
    out = io.TextIOWrapper(buffer, encoding="utf-8", errors="strict", newline="")
    err = io.StringIO()
    code = main(
        ["scan", str(tmp_path), "--allowlist", str(allowlist), "--format", "json"], out, err
    )
    out.flush()
    assert code == 1 and "internal error" not in err.getvalue(), err.getvalue()  # the bad object
    doc = json.loads(buffer.getvalue().decode("utf-8"))
    [bad] = doc["inputs"]["unreadable"]
    assert "bad\udcff.parquet" in bad
    assert [f["user"] for f in doc["findings"]] == [INTRUDER]


# --- detections and their options -----------------------------------------------------------

HOURS = "ecr-upload-outside-business-hours"
DEFAULT = "ecr-upload-unknown-user"
# Wednesday 2026-11-18, 22:00 UTC: outside business hours in UTC, inside them in Tokyo's morning
# (07:00 Thursday) only when the hours start early enough.
NIGHT_MS = lake.T0_MS - 2 * 86_400_000 + 12 * 3_600_000


@pytest.fixture
def night_dir(tmp_path: Path) -> Path:
    root = tmp_path / "night"
    path = root / lake.key_for(2)
    path.parent.mkdir(parents=True)
    lake.write_object(
        path,
        [
            lake.event(time_ms=NIGHT_MS),  # the allowlisted CI role, at night
            lake.event(arn=INTRUDER, session_issuer=None),  # unknown, in business hours
        ],
        2,
    )
    return root


def _users_by_detection(out: str) -> dict[str, set[str]]:
    got: dict[str, set[str]] = {}
    for line in out.splitlines():
        rec = json.loads(line)
        got.setdefault(rec["detection_id"], set()).add(rec["user"])
    return got


def test_detections_lists_every_detection_with_its_options():
    code, out, err = run("detections")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(detections.registry())
    rows = {line.split("\t")[0]: line.split("\t") for line in lines}
    _, ident, name, severity, default, options = rows[DEFAULT][:6]
    assert ident == "886a8f46-d7e2-4439-b9ba-aec238e31732"
    assert name == "ASL AWS ECR Container Upload Unknown User"
    assert (severity, default, options) == ("medium", "default", "options: none")
    if HOURS in rows:
        assert rows[HOURS][4] == "optional"
        assert "BUSINESS_HOURS_TIMEZONE=UTC" in rows[HOURS][5]


def test_scan_runs_the_detections_asked_for(night_dir: Path, allowlist: Path):
    hours = detections.get(HOURS)
    unknown = detections.get(DEFAULT)
    argv = ["scan", str(night_dir), "--allowlist", str(allowlist), "--format", "jsonl"]
    code, out, err = run(*argv, "--detection", HOURS)
    assert code == 0, err
    ci_session = f"arn:aws:sts::{lake.ACCOUNT}:assumed-role/ci-deployer/build-1"
    assert _users_by_detection(out) == {hours.id: {ci_session}}
    code, out, err = run(*argv, "--detection", HOURS, "--detection", DEFAULT)
    assert code == 0, err
    got = _users_by_detection(out)
    assert set(got) == {hours.id, unknown.id}
    assert got[unknown.id] == {INTRUDER}
    # The default is the unknown-user detection alone.
    code, out, _ = run(*argv)
    assert _users_by_detection(out) == {unknown.id: {INTRUDER}}


def test_options_come_from_the_environment_and_option_wins(
    night_dir: Path, allowlist: Path, monkeypatch: pytest.MonkeyPatch
):
    argv = ["scan", str(night_dir), "--allowlist", str(allowlist), "--format", "jsonl"]
    argv += ["--detection", HOURS]
    # 22:00 UTC is 23:00 in Berlin (outside) and 07:00 in Tokyo; 06:00-20:00 Tokyo takes it in.
    monkeypatch.setenv("BUSINESS_HOURS_START", "06:00")
    monkeypatch.setenv("BUSINESS_HOURS_TIMEZONE", "Europe/Berlin")
    code, out, err = run(*argv)
    assert code == 0, err
    assert len(out.splitlines()) == 1
    code, out, err = run(*argv, "--option", "BUSINESS_HOURS_TIMEZONE=Asia/Tokyo")
    assert code == 0, err
    assert out == ""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--detection", "no-such-detection"], "'no-such-detection'"),
        (["--option", "BUSINESS_HOURS_TIMEZONE=UTC"], "BUSINESS_HOURS_TIMEZONE"),  # not enabled
        (["--detection", HOURS, "--option", "NO_SUCH_OPTION=1"], "NO_SUCH_OPTION"),
        (["--detection", HOURS, "--option", "BUSINESS_HOURS_TIMEZONE=Mars/Olympus"], "Mars"),
        (["--detection", HOURS, "--option", "BUSINESS_HOURS_START=8"], "BUSINESS_HOURS_START"),
        (["--detection", HOURS, "--option", "BUSINESS_HOURS_START=21:00"], "before"),
        (["--option", "no-equals-sign"], "NAME=VALUE"),
    ],
)
def test_unknown_detections_and_bad_options_exit_2(
    night_dir: Path, allowlist: Path, extra: list[str], message: str
):
    code, out, err = run("scan", str(night_dir), "--allowlist", str(allowlist), *extra)
    assert code == 2, err
    assert out == ""
    assert err.startswith("error: ") and message in err
    if "no-such-detection" in extra:
        assert DEFAULT in err and HOURS in err  # the known ones are named


def test_empty_allowlist_warning_names_the_detection_it_concerns(night_dir: Path, tmp_path: Path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run("scan", str(night_dir), "--allowlist", str(empty))
    assert code == 0
    [warning] = [line for line in err.splitlines() if line.startswith("warning:")]
    assert "empty" in warning and DEFAULT in warning and "PutImage" in warning
    # A detection that does not consult the allowlist is not concerned.
    code, _, err = run("scan", str(night_dir), "--allowlist", str(empty), "--detection", HOURS)
    assert code == 0 and "warning" not in err


# --- nothing read is not an all clear ---------------------------------------------------------

NONE_FOUND = "No findings"


def _summary(err: str) -> list[str]:
    return [line for line in err.splitlines() if " inputs read" in line]


@pytest.mark.parametrize("fmt", ["table", "jsonl"])
@pytest.mark.parametrize("what", ["missing", "empty dir", "not parquet"])
def test_nothing_read_says_so_and_exits_3(allowlist: Path, tmp_path: Path, what: str, fmt: str):
    if what == "missing":
        path = tmp_path / "nope" / "x.parquet"
    elif what == "empty dir":
        path = tmp_path / "empty"
        path.mkdir()
    else:
        path = tmp_path / "README"
        path.write_text("# not Parquet\n")
    code, out, err = run("scan", str(path), "--allowlist", str(allowlist), "--format", fmt)
    assert code == 3, err
    assert out == ""  # no "No findings" line: nothing was looked at
    assert "the rest were scanned" not in err
    assert _summary(err) == ["error: 0 of 1 inputs read: nothing was scanned, no result"]
    assert (
        sum(line.startswith("error:") for line in err.splitlines()) == 2
    )  # the input, then 0 of 1


def test_nothing_read_in_json_is_a_document_naming_every_unread_input(
    allowlist: Path, tmp_path: Path
):
    bad = tmp_path / "README"
    bad.write_text("hello")
    code, out, err = run(
        "scan", str(bad), str(tmp_path / "gone"), "--allowlist", str(allowlist), "--format", "json"
    )
    assert code == 3, err
    doc = json.loads(out)
    assert doc["findings"] == [] and doc["inputs"]["objects"] == 0
    assert len(doc["inputs"]["unreadable"]) == 2
    assert _summary(err) == ["error: 0 of 2 inputs read: nothing was scanned, no result"]


def test_s3_prefix_without_credentials_is_nothing_read(
    allowlist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # fail fast: no instance metadata
    code, out, err = run("scan", "s3://lake/aws/CLOUD_TRAIL_MGMT/", "--allowlist", str(allowlist))
    assert code == 3, err
    assert out == ""
    assert "s3://lake/aws/CLOUD_TRAIL_MGMT/: cannot list" in err and "credentials" in err
    assert _summary(err) == ["error: 0 of 1 inputs read: nothing was scanned, no result"]


def test_a_partial_read_says_how_much_was_read(lake_dir: Path, allowlist: Path, tmp_path: Path):
    bad = lake_dir / "aws" / "broken.parquet"
    bad.write_bytes(b"id,name\n1,x\n")
    code, out, err = run(
        "scan", str(lake_dir), str(tmp_path / "gone"), "--allowlist", str(allowlist)
    )
    assert code == 1
    assert INTRUDER in out  # the findings of what was read
    assert _summary(err) == [
        "warning: 2 of 4 inputs read; the findings are of those only (2 could not be read)"
    ]
    assert out.splitlines()[-1] == (
        "Only 2 of 4 inputs read: the lines above are about those (the others are named on stderr)."
    )
    # Nothing found in what was read: the "no findings" line says what it covers.
    trust_all = tmp_path / "all.txt"
    trust_all.write_text(f"arn:aws:iam::{lake.ACCOUNT}:user/*\n{lake.CI_ROLE}\n")
    code, out, err = run(
        "scan", str(lake_dir), str(tmp_path / "gone"), "--allowlist", str(trust_all)
    )
    assert code == 1
    assert out.startswith("No findings") and "Only 2 of 4 inputs read" in out.splitlines()[1]
    # Everything read: no summary at all.
    code, _, err = run(
        "scan", str(lake_dir / "aws" / "CLOUD_TRAIL_MGMT"), "--allowlist", str(allowlist)
    )
    assert code == 0 and _summary(err) == []


def test_help_documents_every_exit_status(capsys: pytest.CaptureFixture[str]):
    assert main(["scan", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for line in (
        "0 every input was read",
        "1 some inputs could not be read",
        "2 usage error",
        "3 no input could be read",
        "130 interrupted",
    ):
        assert line in text, line
    assert main(["--help"]) == 0
    assert "3 no input could be read" in " ".join(capsys.readouterr().out.split())


# --- several detections in every format -------------------------------------------------------


def test_table_of_several_detections_has_a_detection_column_and_a_line_each(
    lake_dir: Path, allowlist: Path
):
    hours, unknown = detections.get(HOURS), detections.get(DEFAULT)
    code, out, err = run(
        "scan", str(lake_dir), "--allowlist", str(allowlist), "--detection", DEFAULT,
        "--detection", HOURS,
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["detection", "user"]
    assert lines[1].startswith(DEFAULT) and INTRUDER in lines[1]
    assert unknown.email is not None and hours.email is not None
    assert lines[-2].startswith("1 finding(s), 2 PutImage call(s)")
    assert lines[-1] == hours.email.none_found  # in business hours: its own words
    # Nothing found by either: one line each, each in its own words.
    trust_all = lake_dir.parent / "all.txt"
    trust_all.write_text(f"arn:aws:iam::{lake.ACCOUNT}:user/*\n{lake.CI_ROLE}\n")
    code, out, err = run(
        "scan", str(lake_dir), "--allowlist", str(trust_all), "--detection", HOURS,
        "--detection", DEFAULT,
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines() == [hours.email.none_found, unknown.email.none_found]


def test_json_of_several_detections_lists_each_even_without_findings(
    lake_dir: Path, allowlist: Path
):
    hours, unknown = detections.get(HOURS), detections.get(DEFAULT)
    code, out, err = run(
        "scan", str(lake_dir), "--allowlist", str(allowlist), "--format", "json",
        "--detection", DEFAULT, "--detection", HOURS,
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["detection"] == json.loads(json.dumps(unknown.metadata()))
    assert [d["id"] for d in doc["detections"]] == [unknown.id, hours.id]
    assert doc["detections"][1] == json.loads(json.dumps(hours.metadata()))
    assert [f["detection_id"] for f in doc["findings"]] == [unknown.id]


def test_jsonl_of_several_detections_names_each_findings_detection(
    night_dir: Path, allowlist: Path
):
    hours, unknown = detections.get(HOURS), detections.get(DEFAULT)
    code, out, err = run(
        "scan", str(night_dir), "--allowlist", str(allowlist), "--format", "jsonl",
        "--detection", HOURS, "--detection", DEFAULT,
    )  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["detection_id"] for r in records] == [hours.id, unknown.id]  # in the order asked
    assert [list(r)[:10] for r in records] == [STABLE_KEYS, STABLE_KEYS]


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl"])
def test_business_hours_alone_needs_no_allowlist_and_speaks_for_itself(
    lake_dir: Path, night_dir: Path, fmt: str
):
    hours = detections.get(HOURS)
    assert hours.email is not None
    code, out, err = run("scan", str(lake_dir), "--detection", HOURS, "--format", fmt)
    assert code == 0, err
    if fmt == "table":
        assert out == hours.email.none_found + "\n"
    elif fmt == "json":
        doc = json.loads(out)
        assert doc["detection"]["id"] == hours.id and doc["findings"] == []
        assert "detections" not in doc
    else:
        assert out == ""
    code, out, err = run("scan", str(night_dir), "--detection", HOURS, "--format", "jsonl")
    assert code == 0, err
    assert [json.loads(line)["detection_id"] for line in out.splitlines()] == [hours.id]


def test_allowlist_is_required_by_the_detections_that_use_it(lake_dir: Path, allowlist: Path):
    code, out, err = run("scan", str(lake_dir), "--detection", HOURS, "--detection", DEFAULT)
    assert code == 2 and out == ""
    assert err == f"error: --allowlist is required by {DEFAULT} (it trusts what it lists)\n"
    code, _, err = run("scan", str(lake_dir))
    assert code == 2 and "--allowlist is required" in err
    # Given to a detection that does not use it: said, not silently ignored.
    code, _, err = run("scan", str(lake_dir), "--allowlist", str(allowlist), "--detection", HOURS)
    assert code == 0
    assert f"note: --allowlist is not used by {HOURS}" in err


# --- partitions: --since/--until, --region, --account ---------------------------------------

OTHER_ACCOUNT = "444455556666"
DAY_MS = 86_400_000
# (version, region, account, day): each object's one push is by its own user, named after it.
PARTITIONS = [
    (2, "us-east-1", lake.ACCOUNT, "20261119"),
    (2, "us-east-1", lake.ACCOUNT, "20261120"),
    (2, "us-east-1", lake.ACCOUNT, "20261121"),
    (2, "eu-west-1", lake.ACCOUNT, "20261120"),
    (2, "us-east-1", OTHER_ACCOUNT, "20261120"),
    (1, "us-east-1", lake.ACCOUNT, "20261120"),
]


def _who(version: int, region: str, account: str, day: str) -> str:
    return f"arn:aws:iam::{account}:user/v{version}-{region}-{day}"


def _partition_objects() -> list[tuple[str, bytes]]:
    objects = []
    for version, region, account, day in PARTITIONS:
        buf = io.BytesIO()
        time_ms = lake.T0_MS + (int(day) - 20261120) * DAY_MS
        who = _who(version, region, account, day)
        ev = lake.event(
            arn=who, session_issuer=None, account=account, region=region, time_ms=time_ms
        )
        lake.write_object(buf, [ev], version)
        objects.append((lake.key_for(version, region, account, day), buf.getvalue()))
    return objects


def _users(out: str) -> set[str]:
    return {json.loads(line)["user"] for line in out.splitlines()}


# (filters, the partitions whose objects are read)
SELECTIONS = [
    (["--since", "2026-11-20", "--until", "2026-11-20"], [1, 3, 4, 5]),
    (["--since", "2026-11-21"], [2]),
    (["--until", "2026-11-19"], [0]),
    (["--until", "2026-11-20T00:00:00Z"], [0]),  # a date-time end is excluded
    (["--since", "2026-11-20T23:59:00+02:00"], [1, 2, 3, 4, 5]),  # 21:59 UTC on the 20th
    (["--region", "eu-west-1"], [3]),
    (["--account", OTHER_ACCOUNT], [4]),
    (["--region", "us-east-1", "--account", lake.ACCOUNT, "--since", "2026-11-20"], [1, 2, 5]),
    (["--region", "eu-west-1", "--region", "us-east-1", "--until", "2026-11-19"], [0]),
]


@mock_aws
@pytest.mark.parametrize(("filters", "chosen"), SELECTIONS)
def test_an_s3_prefix_is_listed_and_read_only_in_the_partitions_asked_for(
    allowlist: Path, monkeypatch: pytest.MonkeyPatch, filters: list[str], chosen: list[int]
):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    for key, body in _partition_objects():
        s3.put_object(Bucket="lake", Key=key, Body=body)
    s3.put_object(
        Bucket="lake", Key="aws/CLOUD_TRAIL_MGMT/2.0/metadata/1.metadata.json", Body=b"{}"
    )
    import detector.aws.s3 as adapter

    listed: list[dict[str, str]] = []
    read: list[str] = []
    real = adapter.boto3.client

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        client = real(*args, **kwargs)
        events = client.meta.events
        events.register(
            "provide-client-params.s3.ListObjectsV2", lambda params, **_: listed.append(params)
        )
        events.register(
            "provide-client-params.s3.GetObject", lambda params, **_: read.append(params["Key"])
        )
        return client

    monkeypatch.setattr(adapter.boto3, "client", recording)
    code, out, err = run(
        "scan", "s3://lake/aws/CLOUD_TRAIL_MGMT/", "--allowlist", str(allowlist), "--format",
        "jsonl", *filters,
    )  # fmt: skip
    assert code == 0, err
    assert _users(out) == {_who(*PARTITIONS[i]) for i in chosen}
    assert set(read) == {lake.key_for(*PARTITIONS[i]) for i in chosen}  # no other object GET
    # Listed folder by folder, never inside a partition not asked for, and never a flat listing
    # of anything that holds one (as listing the prefix whole would: every day of every region).
    assert any(call.get("Delimiter") == "/" for call in listed)
    others = [lake.key_for(*p) for i, p in enumerate(PARTITIONS) if i not in chosen]
    for call in listed:
        prefix = call.get("Prefix", "")
        for key in others:
            assert not prefix.startswith(key.rsplit("/", 1)[0] + "/"), (prefix, key)
            if call.get("Delimiter") is None:
                assert not key.startswith(prefix), (prefix, key)


def test_a_local_lake_is_filtered_the_same_way(tmp_path: Path, allowlist: Path):
    root = tmp_path / "mirror"
    for key, body in _partition_objects():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(body)
    for filters, chosen in SELECTIONS:
        code, out, err = run(
            "scan", str(root), "--allowlist", str(allowlist), "--format", "jsonl", *filters
        )
        assert code == 0, (filters, err)
        assert _users(out) == {_who(*PARTITIONS[i]) for i in chosen}, filters


def test_partitions_that_match_nothing_are_nothing_read(tmp_path: Path, allowlist: Path):
    root = tmp_path / "mirror"
    for key, body in _partition_objects():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(body)
    code, out, err = run("scan", str(root), "--allowlist", str(allowlist), "--since", "2027-01-01")
    assert code == 3 and out == ""
    assert f"{root}: no Parquet objects found in the partitions asked for" in err


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (["--since", "yesterday"], "--since"),
        (["--until", "2026-13-01"], "--until"),
        (["--since", "2026-11-21", "--until", "2026-11-20"], "not after --since"),
        (["--region", "us east 1"], "--region"),
        (["--account", "12345"], "--account"),
    ],
)
def test_bad_partition_filters_are_usage_errors(
    lake_dir: Path, allowlist: Path, filters: list[str], message: str
):
    code, out, err = run("scan", str(lake_dir), "--allowlist", str(allowlist), *filters)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err, err


def test_progress_is_a_bar_on_a_terminal_only(lake_dir: Path, allowlist: Path):
    argv = ["scan", str(lake_dir), "--allowlist", str(allowlist), "--format", "jsonl"]
    argv += ["--since", "2026-11-20"]
    quiet = io.StringIO()
    main(argv, out=io.StringIO(), err=quiet)
    assert quiet.getvalue() == ""
    tty = _Terminal()
    main(argv, out=io.StringIO(), err=tty)
    text = tty.getvalue()
    assert "\r[" + "#" * 24 + "] 2/2 objects, 6 rows" in text
    assert text.endswith("\n")
