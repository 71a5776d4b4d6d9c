"""``suggest-allowlist``: who pushed, folded into entries the allowlist really matches."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from detector.analysis import engine, suggest
from detector.analysis.findings import Finding
from detector.app.cli import main
from detector.core.allowlist import Allowlist
from tests.lake import ACCOUNT, CI_ROLE, T0_MS, event, key_for, write_object

STS = f"arn:aws:sts::{ACCOUNT}:assumed-role"


def finding(
    user: str | None,
    count: int = 1,
    *,
    issuer: str | None = None,
    invoked_by: str | None = None,
    last_ms: int = T0_MS,
    repository: str = "app",
    account: str | None = ACCOUNT,
    domain: str | None = None,
) -> Finding:
    f = Finding(
        key=("PutImage", user, account, "docker", "198.51.100.7", domain, "us-east-1"),
        count=count,
        first_ms=last_ms - 1000,
        last_ms=last_ms,
    )
    f.session_issuers.add([issuer])
    f.invoked_by.add([invoked_by])
    f.repositories.add([repository])
    return f


def entries(text: str) -> list[str]:
    return list(Allowlist.parse(text).entries)


def test_sessions_of_a_role_collapse_to_the_session_issuer():
    out = suggest.suggest(
        [
            finding(f"{STS}/ci-deployer/build-1", 3, issuer=CI_ROLE, last_ms=T0_MS),
            finding(f"{STS}/ci-deployer/build-2", 2, issuer=CI_ROLE, last_ms=T0_MS + 5000),
        ]
    )
    [s] = out
    assert (s.entry, s.kind, s.pushes, s.last_ms) == (CI_ROLE, "role", 5, T0_MS + 5000)


def test_the_issuer_keeps_the_role_path():
    role = f"arn:aws:iam::{ACCOUNT}:role/service-role/builder"
    [s] = suggest.suggest([finding(f"{STS}/builder/x", issuer=role)])
    assert s.entry == role
    assert Allowlist.of([s.entry]).matches(role)


def test_a_session_without_issuer_becomes_a_glob_that_matches_its_sessions():
    [s] = suggest.suggest([finding(f"{STS}/deployer/s-1"), finding(f"{STS}/deployer/s-2")])
    assert s.entry == f"{STS}/deployer/*"
    assert s.pushes == 2
    allow = Allowlist.of([s.entry])
    assert allow.matches(f"{STS}/deployer/s-9")
    assert not allow.matches(f"{STS}/deployer-admin/s-1")


def test_users_services_and_unknown_callers():
    user = f"arn:aws:iam::{ACCOUNT}:user/alice"
    out = suggest.suggest(
        [
            finding(user, 4),
            finding(None, 2, invoked_by="codebuild.amazonaws.com"),
            finding(None, 1),
        ]
    )
    assert [(s.entry, s.kind) for s in out] == [
        (user, "user"),
        ("codebuild.amazonaws.com", "service"),
        (None, "unknown"),
    ]
    text = suggest.render(out, source="test")
    assert entries(text) == [user, "codebuild.amazonaws.com"]
    assert "# (no caller identity recorded): nothing to allowlist" in text


def test_a_push_aws_made_itself_is_suggested_by_its_source_domain():
    ecr = "ecr.amazonaws.com"
    out = suggest.suggest(
        [
            finding(None, 3, domain=ecr),  # replication / pull-through cache
            finding(f"arn:aws:iam::{ACCOUNT}:user/alice", 2, domain=ecr),  # the user, not ecr
            finding(None, 1, domain="AWS Internal"),  # no entry can hold it
            finding(None, 1, issuer=CI_ROLE, domain=ecr),  # an issuer: the domain is not used
        ]
    )
    assert [(s.entry, s.kind) for s in out] == [
        (ecr, "source domain"),
        (f"arn:aws:iam::{ACCOUNT}:user/alice", "user"),
        (CI_ROLE, "role"),
        (None, "source domain"),
    ]
    text = suggest.render(out, source="t")
    assert entries(text) == [ecr, f"arn:aws:iam::{ACCOUNT}:user/alice", CI_ROLE]
    assert "# AWS Internal: cannot be an allowlist entry" in text


@pytest.mark.parametrize(
    "odd",
    [
        "AIDAEXAMPLEUSERID",  # a caller value that is no ARN
        "arn:aws:iam::aws:user/x",  # no 12-digit account
        "arn:aws:iam::111122223333:",  # no resource
        "arn:aws:sts::*:assumed-role/x/y",  # would read back as a catch-all glob
    ],
)
def test_callers_that_are_no_valid_entry_are_only_comments(odd):
    out = suggest.suggest([finding(odd, 2), finding(f"arn:aws:iam::{ACCOUNT}:user/ok")])
    text = suggest.render(out, source="t")
    assert entries(text) == [f"arn:aws:iam::{ACCOUNT}:user/ok"]
    assert "cannot be an allowlist entry" in text


def test_a_role_that_a_service_used_stays_the_role_with_the_service_noted():
    [s] = suggest.suggest(
        [finding(f"{STS}/ci/x", issuer=CI_ROLE, invoked_by="codebuild.amazonaws.com")]
    )
    assert s.entry == CI_ROLE
    assert "via codebuild.amazonaws.com" in suggest.render([s], source="t")


def test_most_pushes_first_then_by_name():
    out = suggest.suggest(
        [
            finding(f"arn:aws:iam::{ACCOUNT}:user/b", 1),
            finding(f"arn:aws:iam::{ACCOUNT}:user/a", 1),
            finding(f"arn:aws:iam::{ACCOUNT}:user/c", 7),
        ]
    )
    assert [s.entry for s in out] == [
        f"arn:aws:iam::{ACCOUNT}:user/c",
        f"arn:aws:iam::{ACCOUNT}:user/a",
        f"arn:aws:iam::{ACCOUNT}:user/b",
    ]
    text = suggest.render(out, source="t")
    assert entries(text) == [s.entry for s in out]
    assert (
        "# user, 7 push(es) (0 succeeded, 0 failed, 7 outcome unknown), last 2026-11-20T10:00:00"
        in text
    )


@pytest.mark.parametrize(
    "hostile",
    [
        f"arn:aws:iam::{ACCOUNT}:user/with space",
        f"arn:aws:iam::{ACCOUNT}:user/new\nline",
        f"arn:aws:iam::{ACCOUNT}:user/comma,split",
        f"arn:aws:iam::{ACCOUNT}:user/hash#comment",
        f"arn:aws:iam::{ACCOUNT}:user/*",
        f"arn:aws:iam::{ACCOUNT}:user/caf\u00e9",
        "\x1b[31mred\x1b[0m",
        f"{STS}/role,with,commas/x",
    ],
)
def test_principals_the_format_cannot_hold_are_only_comments(hostile):
    out = suggest.suggest([finding(hostile, 2), finding(f"arn:aws:iam::{ACCOUNT}:user/ok")])
    text = suggest.render(out, source="t")
    assert entries(text) == [f"arn:aws:iam::{ACCOUNT}:user/ok"]
    assert "cannot be an allowlist entry" in text
    assert "\x1b" not in text
    assert all(
        line.startswith("#") or line in ("", f"arn:aws:iam::{ACCOUNT}:user/ok")
        for line in text.splitlines()
    )


def test_repositories_accounts_and_samples_in_the_comment():
    out = suggest.suggest(
        [
            finding(f"{STS}/ci/{i}", issuer=CI_ROLE, repository=f"repo-{i}", account=acct)
            for i, acct in enumerate([ACCOUNT, "444455556666"] * 4)
        ]
    )
    text = suggest.render(out, source="s3://lake/aws/CLOUD_TRAIL_MGMT/")
    assert "account(s) 111122223333, 444455556666" in text
    assert "repositories repo-0, repo-1, repo-2, repo-3, repo-4, … (3+ more)" in text
    assert "# From: s3://lake/aws/CLOUD_TRAIL_MGMT/" in text
    assert "# 1 principal(s), 8 PutImage call(s)." in text


# --- applied to real objects ------------------------------------------------------------------


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    for version in (1, 2):
        path = root / key_for(version)
        path.parent.mkdir(parents=True)
        write_object(
            path,
            [
                event(),  # the CI role, with its issuer
                event(arn=f"{STS}/ci-deployer/build-2", time_ms=T0_MS + 60_000),
                event(arn=f"{STS}/no-issuer/s1", session_issuer=None),
                event(arn=f"arn:aws:iam::{ACCOUNT}:user/alice", session_issuer=None),
                event(
                    arn=None,
                    principal_id=None,
                    session_issuer=None,
                    invoked_by="codebuild.amazonaws.com",
                    src_ip=None,
                    src_domain="codebuild.amazonaws.com",
                ),
                event(arn=None, principal_id=None, account=None, session_issuer=None),
                event(  # a pull-through cache push: no identity, only the source domain
                    arn=None,
                    principal_id=None,
                    account=None,
                    session_issuer=None,
                    src_ip=None,
                    src_domain="ecr.amazonaws.com",
                ),
                event(arn=f"arn:aws:iam::{ACCOUNT}:user/odd name", session_issuer=None),
                event(
                    operation="GetAuthorizationToken",
                    arn=f"arn:aws:iam::{ACCOUNT}:user/bob",
                    session_issuer=None,
                    request_json=None,
                ),
            ],
            version,
        )
    return root


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_the_suggestion_applied_leaves_only_what_it_could_not_allowlist(lake_dir: Path):
    code, out, err = run("suggest-allowlist", str(lake_dir))
    assert code == 0, err
    allow = Allowlist.parse(out)
    assert list(allow.entries) == [
        CI_ROLE,  # 4 pushes over both versions, then 2 each, by name
        f"arn:aws:iam::{ACCOUNT}:user/alice",
        f"{STS}/no-issuer/*",
        "codebuild.amazonaws.com",
        "ecr.amazonaws.com",
    ]
    assert f"arn:aws:iam::{ACCOUNT}:user/bob" not in out  # did not push
    run_ = engine.Run(allow)
    for path in sorted(lake_dir.rglob("*.parquet")):
        with path.open("rb") as f:
            run_.add(engine.scan_object(f, str(path), allow))
    left = {f.user for f in run_.findings()}
    assert left == {None, f"arn:aws:iam::{ACCOUNT}:user/odd name"}


def test_cli_usage_and_unreadable_inputs(lake_dir: Path, tmp_path: Path):
    assert run("suggest-allowlist")[0] == 2
    code, _, err = run("suggest-allowlist", str(lake_dir), "--from-athena")
    assert code == 2 and "not both" in err
    code, _, err = run("suggest-allowlist", "--from-athena", "--workgroup", "wg")
    assert code == 2 and "--region" in err
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"nope")
    code, out, err = run("suggest-allowlist", str(lake_dir), str(broken))
    assert code == 1
    assert CI_ROLE in out
    assert "broken.parquet" in err
    assert "\n# Only 2 of 3 inputs read: this list is about those" in out, out[:400]
    assert "2 of 3 inputs read" in err


# --- principals that only tried -----------------------------------------------------------------

PROBER = f"arn:aws:iam::{ACCOUNT}:user/prober"
DENIED = {"status": "Failure", "error_code": "AccessDeniedException"}


@pytest.fixture
def probed_dir(tmp_path: Path) -> Path:
    root = tmp_path / "probed"
    path = root / key_for(2)
    path.parent.mkdir(parents=True)
    alice = f"arn:aws:iam::{ACCOUNT}:user/alice"
    write_object(
        path,
        [
            *(
                event(arn=PROBER, session_issuer=None, time_ms=T0_MS + i, **DENIED)
                for i in range(4)
            ),
            event(),  # the CI role: 2 succeeded, 1 failed
            event(time_ms=T0_MS + 1),
            event(time_ms=T0_MS + 2, **DENIED),
            event(arn=alice, session_issuer=None),
        ],
        2,
    )
    return root


def test_counts_of_succeeded_and_failed_pushes_are_kept():
    f = finding(PROBER, 4)
    f.failed = 4
    g = finding(PROBER, 3)
    g.succeeded, g.failed = 1, 1
    [s] = suggest.suggest([f, g])
    assert (s.pushes, s.succeeded, s.failed) == (7, 1, 5)
    assert "# user, 7 push(es) (1 succeeded, 5 failed, 1 outcome unknown), last" in (
        suggest.render([s], source="t")
    )


def test_principals_that_never_succeeded_are_left_out_and_counted(probed_dir: Path):
    code, out, err = run("suggest-allowlist", str(probed_dir))
    assert code == 0, err
    assert entries(out) == [CI_ROLE, f"arn:aws:iam::{ACCOUNT}:user/alice"]
    assert PROBER not in out
    assert "# role, 3 push(es) (2 succeeded, 1 failed), last" in out
    assert "# user, 1 push(es) (1 succeeded, 0 failed), last" in out
    left = (
        "# Left out: 1 principal(s) none of whose 4 PutImage call(s) succeeded "
        "(--include-failed lists them)."
    )
    assert left in out.splitlines()
    assert "note: 1 principal(s) left out: no PutImage call of theirs succeeded" in err


def test_include_failed_lists_them_marked(probed_dir: Path):
    code, out, err = run("suggest-allowlist", str(probed_dir), "--include-failed")
    assert code == 0, err
    assert entries(out) == [PROBER, CI_ROLE, f"arn:aws:iam::{ACCOUNT}:user/alice"]
    lines = out.splitlines()
    at = lines.index(PROBER)
    assert lines[at - 2].startswith("# user, 4 push(es) (0 succeeded, 4 failed), last")
    assert lines[at - 1] == "# No push succeeded: only attempts. Trust it only if you know why."
    assert "Left out" not in out and "left out" not in err


def test_nothing_read_suggests_nothing(tmp_path: Path):
    code, out, err = run("suggest-allowlist", str(tmp_path / "nope"))
    assert code == 3
    assert out == ""
    assert "0 of 1 inputs read" in err
