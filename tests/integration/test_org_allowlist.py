"""Trust at organisation scale, through the Lambda handler against moto: an allowlist made of
every parameter under a path (teams own their own), and entries over named account lists
("this role in each of these accounts") that never trust an account outside the list."""

from __future__ import annotations

from typing import Any

import pytest

from detector import handler
from detector.aws.ssm import AllowlistStore
from detector.core.errors import AllowlistInvalid, AllowlistUnavailable
from tests import lake
from tests.integration.test_attacks import announce, invoke
from tests.integration.world import Aws, create_state_table

PATH = "/ecr-upload-detector/test/allowlist/"
LISTS = "/ecr-upload-detector/test/account-lists/"
TABLE = "ecr-upload-detector-state"
ACCOUNTS = [f"{100000000000 + i * 7919:012d}" for i in range(500)]
OUTSIDE = "999988887777"


def entries_5000() -> list[str]:
    """5,000 exact entries over 500 accounts: ten principals each."""
    return [
        f"arn:aws:iam::{account}:role/team-{j}-deployer" for account in ACCOUNTS for j in range(10)
    ]


def put_path(aws: Aws, entries: list[str], per_parameter: int = 80) -> list[str]:
    """The entries spread over parameters under PATH (two levels, as teams would), each
    within the Standard tier's 4 KB."""
    names = []
    for n, start in enumerate(range(0, len(entries), per_parameter)):
        name = f"{PATH}team-{n % 7}/list-{n:03d}"
        value = "\n".join(entries[start : start + per_parameter])
        assert len(value) <= 4096
        aws.ssm.put_parameter(Name=name, Type="String", Value=value, Overwrite=True)
        names.append(name)
    return names


def push(arn: str, account: str, i: int = 0) -> dict[str, Any]:
    return lake.event(
        arn=arn,
        account=account,
        session_issuer=None,
        user_type="IAMUser" if ":user/" in arn else "Role",
        time_ms=lake.T0_MS + i,
    )


@pytest.fixture
def org(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Aws:
    create_state_table(TABLE)
    monkeypatch.setenv("STATE_TABLE", TABLE)
    monkeypatch.setenv("ALLOWLIST_PARAMETER", PATH)
    monkeypatch.setenv("ACCOUNT_LISTS_PATH", LISTS)
    aws.ssm.put_parameter(
        Name=f"{LISTS}ci-accounts", Type="String", Value="\n".join(ACCOUNTS[:3]), Overwrite=True
    )
    handler.reset()
    return aws


def test_5000_entries_under_a_path_are_honoured_end_to_end(org: Aws):
    entries = entries_5000()
    names = put_path(org, entries)
    assert len(names) > 50  # many parameters, read through the paginator
    trusted = [push(e, e.split(":")[4], i) for i, e in enumerate(entries[::997])]
    last = entries[-1]
    trusted.append(push(last, last.split(":")[4], 99))
    stranger = f"arn:aws:iam::{ACCOUNTS[0]}:role/team-10-deployer"  # not in any parameter
    result = invoke(announce(org, ("mixed", [*trusted, push(stranger, ACCOUNTS[0], 500)])))
    assert result == {"batchItemFailures": []}
    (digest,) = org.digests()
    assert [a["principal"] for a in digest["alerts"]] == [stranger]


def test_an_account_list_entry_trusts_its_role_in_listed_accounts_only(org: Aws):
    org.ssm.put_parameter(
        Name=f"{PATH}platform",
        Type="String",
        Value="# the CI role of every account in the list\narn:aws:iam::{ci-accounts}:role/ci\n",
    )
    listed = [push(f"arn:aws:iam::{a}:role/ci", a, i) for i, a in enumerate(ACCOUNTS[:3])]
    outsider = f"arn:aws:iam::{OUTSIDE}:role/ci"
    result = invoke(announce(org, ("ci", [*listed, push(outsider, OUTSIDE, 9)])))
    assert result == {"batchItemFailures": []}
    (digest,) = org.digests()
    assert [a["principal"] for a in digest["alerts"]] == [outsider]


def test_errors_name_the_parameter_and_the_line(org: Aws):
    org.ssm.put_parameter(
        Name=f"{PATH}team-a", Type="String", Value=f"{lake.CI_ROLE}\n\narn:aws:iam::*:role/x\n"
    )
    store = AllowlistStore(PATH, account_lists_path=LISTS)
    with pytest.raises(AllowlistInvalid) as info:
        store.get()
    assert f"ssm:{PATH}team-a" in str(info.value) and "line 3" in str(info.value)
    # Through the handler: the item fails (retried, dead-lettered), never judged half-read.
    result = invoke(announce(org, ("bad", [push(f"arn:aws:iam::{OUTSIDE}:user/x", OUTSIDE)])))
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == ["m-bad-0"]


def test_an_unknown_account_list_and_a_bad_account_id_are_refused(org: Aws):
    org.ssm.put_parameter(
        Name=f"{PATH}team-b", Type="String", Value="arn:aws:iam::{no-such-list}:role/ci"
    )
    with pytest.raises(AllowlistInvalid, match=r"no-such-list.*does not exist.*ci-accounts"):
        AllowlistStore(PATH, account_lists_path=LISTS).get()
    org.ssm.delete_parameter(Name=f"{PATH}team-b")
    org.ssm.put_parameter(
        Name=f"{LISTS}ci-accounts", Type="String", Value="111122223333\n12345", Overwrite=True
    )
    with pytest.raises(AllowlistInvalid, match=f"ssm:{LISTS}ci-accounts: line 2"):
        AllowlistStore(PATH, account_lists_path=LISTS).get()


def test_an_empty_path_is_unavailable_not_an_empty_allowlist(aws: Aws):
    with pytest.raises(AllowlistUnavailable, match="none found"):
        AllowlistStore("/nothing/here/").get()


def test_two_account_lists_of_one_name_are_refused_naming_both(org: Aws):
    """Found by an attacker's pass: a second ``ci-accounts`` deeper under the path silently
    replaced the organisation's list."""
    org.ssm.put_parameter(
        Name=f"{LISTS}team-x/ci-accounts", Type="String", Value="999988887777", Overwrite=True
    )
    org.ssm.put_parameter(
        Name=f"{PATH}p", Type="String", Value="arn:aws:iam::{ci-accounts}:role/ci"
    )
    with pytest.raises(AllowlistInvalid, match="also") as info:
        AllowlistStore(PATH, account_lists_path=LISTS).get()
    assert f"{LISTS}ci-accounts" in str(info.value) and "team-x/ci-accounts" in str(info.value)
