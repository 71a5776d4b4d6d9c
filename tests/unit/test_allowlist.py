"""Allowlist parsing (lines, StringList, JSON), what an entry may be, and matching (exact, glob,
vectorised, the source domain of pushes AWS made itself)."""

from __future__ import annotations

import io
import json
import random
import string

import pyarrow as pa
import pytest

from detector.core.allowlist import Allowlist, entry_problem
from detector.core.errors import AllowlistInvalid
from tests import lake
from tests.unit.helpers import parquet_bytes, scan

ROLE = "arn:aws:iam::111122223333:role/ci-deployer"
SESSION = "arn:aws:sts::111122223333:assumed-role/ci-deployer/build-1"
DEV = "arn:aws:iam::111122223333:user/dev1"
STS = "arn:aws:sts::111122223333:assumed-role/"
# An ARN prefix of one account: entries below are globs or names under it.
P = "arn:aws:iam::111122223333:user/"


def both(al: Allowlist, value: str | None) -> bool:
    """``matches`` and ``mask`` must agree on every value; return their common answer."""
    scalar = al.matches(value)
    vector = al.mask(pa.array([value], pa.string())).to_pylist()
    assert vector == [scalar], (value, scalar, vector)
    return scalar


# --- parsing ---------------------------------------------------------------------------------


def test_parse_lines_with_comments_and_blank_lines():
    text = (
        "# principals allowed to push images\n"
        "\n"
        f"{ROLE}   # the CI role\n"
        "   \n"
        "\t# indented comment\n"
        f"  {DEV}\n"
        "# arn:aws:iam::111122223333:user/commented-out\n"
    )
    al = Allowlist.parse(text, source="ssm:/ecr/allow")
    assert al.entries == (ROLE, DEV)
    assert al.source == "ssm:/ecr/allow"
    assert both(al, ROLE)
    assert both(al, DEV)
    assert not both(al, "arn:aws:iam::111122223333:user/commented-out")
    assert not both(al, "# the CI role")


def test_parse_windows_line_endings():
    al = Allowlist.parse(f"{ROLE}\r\n{DEV}\r\n")
    assert al.entries == (ROLE, DEV)


def test_parse_comma_separated_stringlist():
    al = Allowlist.parse(f"{ROLE},{DEV}, arn:aws:iam::111122223333:user/dev2 ,,")
    assert al.entries == (ROLE, DEV, "arn:aws:iam::111122223333:user/dev2")
    assert both(al, "arn:aws:iam::111122223333:user/dev2")
    assert not both(al, " arn:aws:iam::111122223333:user/dev2 ")


def test_parse_commas_and_lines_mixed_and_duplicates_collapsed():
    al = Allowlist.parse(f"{ROLE},{DEV}\n{DEV}  # again\n{ROLE}")
    assert al.entries == (ROLE, DEV)


def test_parse_json_array():
    al = Allowlist.parse(f'  \n["{ROLE}", "{P}dev?", ""]\n')
    assert al.entries == (ROLE, f"{P}dev?")
    assert both(al, ROLE)
    assert both(al, DEV)
    assert not both(al, "arn:aws:iam::111122223333:user/dev12")


def test_parse_json_empty_array_is_empty():
    assert Allowlist.parse("[]").empty


@pytest.mark.parametrize(
    "text",
    [
        '["arn:a", "arn:b"',
        '["arn:a",\n "arn:b",\n oops]',
        "['arn:a']",
    ],
)
def test_parse_invalid_json_raises_naming_the_line(text):
    with pytest.raises(AllowlistInvalid) as info:
        Allowlist.parse(text, source="allow.json")
    message = str(info.value)
    assert "allow.json" in message
    bad_line = 3 if "oops" in text else 1
    assert f"line {bad_line}" in message


@pytest.mark.parametrize("text", ['["arn:a", 1]', '[["arn:a"]]', '["arn:a", null]', '[{"a": 1}]'])
def test_parse_json_array_of_non_strings_raises(text):
    with pytest.raises(AllowlistInvalid):
        Allowlist.parse(text)


@pytest.mark.parametrize(
    "bad",
    [
        "arn:aws:iam::111122223333:user/with space",
        "arn:aws:iam::111122223333:user/tab\there",
        "arn:aws:iam::111122223333:user/esc\x1b[31m",
        "arn:aws:iam::111122223333:user/nul\x00",
        "arn:aws:iam::111122223333:user/del\x7fx",
        "arn:aws:iam::111122223333:user/caf\u00e9",
    ],
    ids=["space", "tab", "escape", "nul", "del", "non-ascii"],
)
def test_parse_entry_with_space_or_control_char_raises_naming_the_line(bad):
    text = f"# header\n{ROLE}\n{bad}\n"
    with pytest.raises(AllowlistInvalid) as info:
        Allowlist.parse(text, source="allow.txt")
    assert "line 3" in str(info.value)
    assert "allow.txt" in str(info.value)


@pytest.mark.parametrize(
    "ctrl",
    ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028"],
    ids=["VT", "FF", "FS", "GS", "RS", "NEL", "LSEP"],
)
def test_parse_control_char_inside_entry_is_rejected_not_treated_as_line_break(ctrl):
    # str.splitlines() breaks lines at these characters too, so an entry holding one would be
    # silently cut into two entries instead of being reported.
    text = f"{ROLE}\narn:aws:iam::111122223333:user/a{ctrl}b\n"
    with pytest.raises(AllowlistInvalid) as info:
        Allowlist.parse(text)
    assert "line 2" in str(info.value)


def test_parse_vertical_tab_cannot_make_a_trust_everything_glob():
    # A pasted "role/ci-deployer<VT>*" must not become the two entries "role/ci-deployer" and "*".
    try:
        al = Allowlist.parse(f"{ROLE}\x0b*")
    except AllowlistInvalid:
        return
    assert not al.matches("arn:aws:iam::999999999999:user/attacker"), al.entries


@pytest.mark.parametrize(
    "entries", [[ROLE, f"{P}with space"], [ROLE, "esc\x1b"], [ROLE, "nul\x00"], [ROLE, "vt\x0bx"]]
)
def test_of_and_json_reject_non_printable_entries(entries):
    with pytest.raises(AllowlistInvalid) as info:
        Allowlist.of(entries, source="inline")
    assert "entry 2" in str(info.value)
    with pytest.raises(AllowlistInvalid):
        Allowlist.parse(json.dumps(entries))


# --- matching --------------------------------------------------------------------------------


def test_exact_entry_matches_only_the_exact_value():
    al = Allowlist.of([ROLE])
    assert both(al, ROLE)
    assert not both(al, ROLE + "2")
    assert not both(al, ROLE[:-1])
    assert not both(al, ROLE.upper())
    assert not both(al, "arn:aws:iam::111122223333:role/CI-DEPLOYER")


def test_glob_star_matches_any_run_including_empty():
    al = Allowlist.of(["arn:aws:sts::111122223333:assumed-role/ci-deployer/*"])
    assert both(al, SESSION)
    assert both(al, "arn:aws:sts::111122223333:assumed-role/ci-deployer/")
    assert both(al, "arn:aws:sts::111122223333:assumed-role/ci-deployer/a/b/c")
    assert not both(al, "arn:aws:sts::111122223333:assumed-role/ci-deployer-admin/x")
    assert not both(al, "arn:aws:sts::111122223333:assumed-role/ci-deployer")
    assert not both(al, SESSION.upper())


def test_glob_question_mark_matches_exactly_one_character():
    al = Allowlist.of(["arn:aws:iam::111122223333:user/dev?"])
    assert both(al, DEV)
    assert both(al, "arn:aws:iam::111122223333:user/devé")
    assert not both(al, "arn:aws:iam::111122223333:user/dev")
    assert not both(al, "arn:aws:iam::111122223333:user/dev12")
    assert not both(al, "arn:aws:iam::111122223333:user/DEV1")


def test_glob_in_the_middle():
    al = Allowlist.of(["arn:aws:sts::111122223333:assumed-role/ci-*/build-*"])
    assert both(al, SESSION)
    assert both(al, "arn:aws:sts::111122223333:assumed-role/ci-x/build-")
    assert not both(al, "arn:aws:sts::111122223333:assumed-role/other/build-1")
    assert not both(al, "arn:aws:sts::444455556666:assumed-role/ci-deployer/build-1")


@pytest.mark.parametrize(
    ("entry", "value"),
    [
        (f"{P}ci", f"{P}ci-deployer"),
        (f"{P}ci", f"x{P}ci"),
        (f"{P}dev?", f"{P}dev1x"),
        (f"{P}dev?", f"x{P}dev1"),
        (f"{P}*/dev1", f"{P}a/dev1/extra"),
        ("codebuild.amazonaws.com", "xcodebuild.amazonaws.com"),
        ("codebuild.amazonaws.com", "codebuild.amazonaws.com.cn"),
    ],
)
def test_no_substring_match(entry, value):
    assert not both(Allowlist.of([entry]), value)


@pytest.mark.parametrize(
    "entry", [ROLE, "arn:aws:iam::111122223333:r*/ci-deployer", f"{P[:-5]}role/ci-deploye?"]
)
def test_trailing_newline_value_does_not_match(entry):
    al = Allowlist.of([entry])
    assert both(al, ROLE)
    assert not both(al, ROLE + "\n")
    assert not both(al, ROLE + "\r\n")
    assert not both(al, "\n" + ROLE)


@pytest.mark.parametrize(
    ("entry", "matching", "not_matching"),
    [
        ("a.b", "a.b", "aXb"),
        ("a+b", "a+b", "aab"),
        ("(ci)", "(ci)", "ci"),
        ("(ci|cd)*", "(ci|cd)-x", "ci"),
        ("x[ab]y", "x[ab]y", "xay"),
        ("x^y$", "x^y$", "xy"),
        ("x{2}", "x{2}", "xx"),
        ("a\\d", "a\\d", "a1"),
        ("a.*b", "a.xyzb", "aXb"),
        ("a?.b", "aZ.b", "aZXb"),
    ],
)
def test_regex_metacharacters_are_literal(entry, matching, not_matching):
    al = Allowlist.of([P + entry])
    assert both(al, P + matching)
    assert not both(al, P + not_matching)
    assert ".amazonaws.com" not in entry
    # A service name's dots are literal too.
    assert not both(Allowlist.of(["ecr.amazonaws.com"]), "ecrXamazonaws.com")


def test_every_printable_punctuation_is_literal_in_a_glob():
    entries = [f"{P}x{c}*" for c in string.punctuation if c not in "*?"]
    al = Allowlist.of(entries)
    for c in string.punctuation:
        if c in "*?":
            continue
        assert both(al, f"{P}x{c}tail")
    assert not both(al, f"{P}xatail")


def _values(rng: random.Random, n: int) -> list[str | None]:
    pool = [
        ROLE,
        SESSION,
        DEV,
        "arn:aws:iam::111122223333:user/dev",
        "arn:aws:iam::111122223333:user/dev12",
        "codebuild.amazonaws.com",
        "ecs.amazonaws.com",
        "",
        "\n",
        ROLE + "\n",
        P + "a.b",
        P + "aXb",
        P + "a+b",
        P + "café",
        "😀",
        P + "\u202eevil",
        "\x00",
        P + "x\x1b[31my",
        None,
    ]
    out: list[str | None] = []
    for _ in range(n):
        v = rng.choice(pool)
        if v is not None and rng.random() < 0.4:
            v = v + rng.choice(["", "1", "/x", "\n", "é", "*", "?"])
        if v is not None and rng.random() < 0.2:
            v = rng.choice(["", "x", "arn:"]) + v
        out.append(v)
    return out


@pytest.mark.parametrize("n", [1, 17, 1023, 1500])
def test_mask_equals_matches(n):
    rng = random.Random(n)
    al = Allowlist.of(
        [
            ROLE,
            f"{P}dev?",
            "arn:aws:sts::111122223333:assumed-role/ci-deployer/*",
            "codebuild.amazonaws.com",
            P + "a.b",
            P + "a+b",
            P + "caf?",
            P + "*evil",
        ]
    )
    a, b = _values(rng, n), _values(rng, n)
    assert al.mask(pa.array(a, pa.string())).to_pylist() == [al.matches(v) for v in a]
    expected = [al.matches(x) or al.matches(y) for x, y in zip(a, b, strict=True)]
    got = al.mask(pa.array(a, pa.string()), pa.array(b, pa.string())).to_pylist()
    assert got == expected
    if n > 1:
        assert any(expected) and not all(expected)


def test_mask_exact_only_and_glob_only():
    values = [ROLE, DEV, SESSION, None, "x"]
    for al in (Allowlist.of([ROLE, DEV]), Allowlist.of([P + "dev?", STS + "ci-*/build-?"])):
        assert al.mask(pa.array(values)).to_pylist() == [al.matches(v) for v in values]


def test_none_and_null_columns_never_match():
    al = Allowlist.of([P + "*"])
    assert not al.matches(None)
    assert al.matches(P)
    assert al.mask(pa.array([None, P + "x"], pa.string())).to_pylist() == [False, True]
    assert al.mask(pa.nulls(3)).to_pylist() == [False, False, False]
    assert al.mask(pa.nulls(2), pa.array([P + "x", None])).to_pylist() == [True, False]


@pytest.mark.parametrize("text", ["", "   \n\n", "# nothing yet\n\n# still nothing\n", ",,", "[]"])
def test_empty_allowlist_matches_nothing(text):
    al = Allowlist.parse(text)
    assert al.empty
    assert al.entries == ()
    for v in (ROLE, "", "*", None):
        assert not both(al, v)
    assert al.mask(pa.array([ROLE, None, ""]), pa.array(["a", "b", None])).to_pylist() == [
        False,
        False,
        False,
    ]
    assert al.mask(pa.array([ROLE] * 2000)).to_pylist() == [False] * 2000


def test_non_empty_allowlist_is_not_empty():
    assert not Allowlist.parse(ROLE).empty
    assert not Allowlist.of(["ecr.amazonaws.com"]).empty


# --- what an entry may be: one account's principals or one AWS service -----------------------

# Every catch-all the issue names, and the ways around a naive check for them.
CATCH_ALLS = [
    "*",
    "**",
    "?*",
    "*?",
    "arn:*",
    "*:*",
    "*/*",
    "a*",
    "arn*",
    "arn:aws:*",
    "arn:aws:iam::*",
    "arn:*:iam::*:*",
    "arn:aws:*:*:*:*",
    "arn:aws:iam::*:*",
    "arn:aws:iam::*:role/*",
    "arn:aws:iam::*:user/*",
    "arn:aws:sts::*:assumed-role/*",
    "arn:aws:iam::????????????:*",
    "arn:aws:iam::111122223333?:*",
    "arn:*:iam::111122223333:user/x",  # * may span ':' and stand for anything up to the account
    "arn:aws:i*::111122223333:user/x",
    "arn:aws:iam:*:111122223333:user/x",
    "*.amazonaws.com",
    "?*.amazonaws.com",
    "*.ecr.amazonaws.com",  # matches arn:aws:iam::<any>:role/x.ecr.amazonaws.com
    "????????????????????????????????.amazonaws.com",  # as long as :role/x.amazonaws.com ARNs
]
# Refused as well, though they reach no ARN: a glob in a service name is refused whatever it is.
SERVICE_GLOBS = ["ec?.amazonaws.com", "code*.amazonaws.com", "ecr.amazonaws.co?"]


@pytest.mark.parametrize("entry", CATCH_ALLS + SERVICE_GLOBS)
def test_catch_all_entries_are_refused_with_their_line(entry):
    with pytest.raises(AllowlistInvalid) as info:
        Allowlist.parse(f"# CI\n{ROLE}\n{entry}\n", source="allow.txt")
    message = str(info.value)
    assert "allow.txt" in message and "line 3" in message and repr(entry) in message
    assert "any account" in message or entry in SERVICE_GLOBS
    with pytest.raises(AllowlistInvalid, match="entry 2"):
        Allowlist.of([ROLE, entry])
    with pytest.raises(AllowlistInvalid, match="line 3: entry 2"):
        Allowlist.parse(json.dumps([ROLE, entry], indent=1))
    with pytest.raises(AllowlistInvalid, match="line 1"):  # an SSM StringList
        Allowlist.parse(f"{ROLE},{entry}")


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("ci-deployer", "not an ARN"),
        ("AROAEXAMPLEID:build-1", "not an ARN"),  # a principal id: never compared
        ("AROA*", "not an ARN"),
        ("111122223333", "not an ARN"),
        ("codebuild", "not an ARN"),
        ("arn:aws:iam::111122223333", "not a whole ARN"),
        ("arn:aws:iam::111122223333*", "not a whole ARN"),
        ("arn:aws:iam::111122223333:", "no resource"),
        ("arn:aws:iam::aws:policy/AdministratorAccess", "12-digit"),
        ("arn:aws:iam::11112222333:user/x", "12-digit"),
        ("arn:aws:iam:::user/x", "12-digit"),
        ("arn:AWS:iam::111122223333:user/x", "partition"),
        ("arn:aws:IAM::111122223333:user/x", "service"),
        ("arn:aws:iam:US-EAST-1:111122223333:user/x", "region"),
        ("CodeBuild.amazonaws.com", "service name"),
        (".amazonaws.com", "service name"),
        ("amazonaws.com", "not an ARN"),
    ],
)
def test_entries_that_name_no_principal_are_refused(entry, why):
    with pytest.raises(AllowlistInvalid, match="line 2") as info:
        Allowlist.parse(f"{ROLE}\n{entry}")
    assert why in str(info.value) and repr(entry) in str(info.value)


@pytest.mark.parametrize(
    "entry",
    [
        ROLE,
        DEV,
        "arn:aws:iam::111122223333:root",
        "arn:aws:iam::111122223333:role/service-role/path/builder",
        "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_x_1",
        "arn:aws:sts::111122223333:assumed-role/ci-deployer/*",
        "arn:aws:iam::111122223333:*",  # every IAM principal of one account: allowed, one account
        "arn:aws-cn:iam::111122223333:role/ci",
        "arn:aws-us-gov:sts::111122223333:assumed-role/ci/*",
        "arn:aws:ecr:us-east-1:111122223333:repository/x",
        "codebuild.amazonaws.com",
        "replication.ecr.amazonaws.com",
        "logs.cn-north-1.amazonaws.com.cn",
    ],
)
def test_principals_of_one_account_and_service_names_are_accepted(entry):
    assert entry_problem(entry) is None
    assert Allowlist.parse(entry).entries == (entry,)


def _account(value: str) -> str | None:
    """The account field of an ARN, None for anything else."""
    fields = value.split(":", 5)
    return fields[4] if value.startswith("arn:") and len(fields) == 6 else None


_ACCOUNTS = ["111122223333", "444455556666", "999999999999", "000000000000"]
_PIECES = [
    "arn",
    ":",
    ":",
    "aws",
    "aws-cn",
    "iam",
    "sts",
    "ecr",
    "us-east-1",
    "",
    "*",
    "*",
    "?",
    "role/",
    "user/",
    "assumed-role/",
    "ci",
    "x",
    ".",
    "/",
    ",",
    "amazonaws.com",
    ".amazonaws.com",
    "111122223333",
    "444455556666",
    "::",
    "-",
    "root",
]


def _random_entry(rng: random.Random) -> str:
    """A candidate entry: a well-formed ARN or service name with some fields globbed or mangled,
    or a random run of pieces."""
    kind = rng.random()
    if kind < 0.45:
        fields = [
            "arn",
            rng.choice(["aws"] * 6 + ["aws-cn", "aws-us-gov", "*", "aw?", "a*"]),
            rng.choice(["iam", "sts"] * 3 + ["ecr", "*", "i*", "?am", "ia?"]),
            rng.choice(["", "", "", "", "us-east-1", "*", "?"]),
            rng.choice(_ACCOUNTS * 2 + ["*", "????????????", "1111222233?3", "1111*", ""]),
            rng.choice(
                [
                    "role/ci",
                    "user/dev?",
                    "assumed-role/ci/*",
                    "*",
                    "root",
                    "",
                    "x*y",
                    "?",
                    "*:*",
                    "*.ecr.amazonaws.com",
                    "user/*,*",
                ]
            ),
        ]
        cut = rng.choice([6, 6, 6, 6, 6, 5, 4, 3, 2])
        entry = ":".join(fields[:cut])
        if cut < 6 and rng.random() < 0.5:
            entry += rng.choice(["*", ":*", "?"])
        return entry
    if kind < 0.7:
        name = rng.choice(["ecr", "codebuild", "replication.ecr", "e*", "*", "?cr", "ec?", "*.ecr"])
        return name + rng.choice([".amazonaws.com", ".amazonaws.com.cn", ".amazonaws.co?"])
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 8)))


SERVICES = [
    "ecr.amazonaws.com",
    "codebuild.amazonaws.com",
    "x.amazonaws.com",
    "replication.ecr.amazonaws.com",
    "ecr.amazonaws.com.cn",
]


def _random_principals(rng: random.Random, n: int) -> list[str]:
    """ARNs of random accounts, with the names IAM allows (dots, commas, ':' in paths) chosen to
    look like other accounts' ARNs and like service names, and service names."""
    names = ["ci", "dev1", "x", "x.ecr.amazonaws.com", "x.amazonaws.com", "a,b", "?", "*"]
    paths = ["", "path/", "::111122223333:user/", ":111122223333:user/", "a/b/"]
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.15:
            out.append(rng.choice(SERVICES))
            continue
        partition = rng.choice(["aws", "aws", "aws-cn", "aws-us-gov"])
        account = rng.choice([*_ACCOUNTS, f"{rng.randrange(10**12):012d}"])
        service, resource = rng.choice(
            [
                ("iam", f"user/{rng.choice(paths)}{rng.choice(names)}"),
                ("iam", f"role/{rng.choice(paths)}{rng.choice(names)}"),
                ("iam", "root"),
                ("sts", f"assumed-role/{rng.choice(names)}/{rng.choice(names)}"),
                ("sts", f"federated-user/{rng.choice(names)}"),
            ]
        )
        out.append(f"arn:{partition}:{service}::{account}:{resource}")
    return out


def _instances(rng: random.Random, entry: str, n: int) -> list[str]:
    """Values the entry matches by construction: each glob filled with hostile text (other
    accounts' ARN parts), so a glob that can reach past its account shows it."""
    fills = [
        "",
        "x",
        ":",
        "::999999999999:user/",
        "999999999999",
        ":999999999999:role/x.",
        "iam::000000000000:user/",
        "/",
        "aws",
        "a,b",
    ]
    out = []
    for _ in range(n):
        value = "".join(
            rng.choice(fills) if ch == "*" else rng.choice("x:9/") if ch == "?" else ch
            for ch in entry
        )
        out.append(value)
    return out


def test_property_every_accepted_entry_matches_principals_of_at_most_one_account():
    rng = random.Random(2026)
    principals = _random_principals(rng, 3000)
    accepted = refused = 0
    for _ in range(2000):
        entry = _random_entry(rng)
        if entry_problem(entry) is not None:
            refused += 1
            with pytest.raises(AllowlistInvalid):
                Allowlist.of([entry])
            continue
        accepted += 1
        al = Allowlist.of([entry])
        values = principals + _instances(rng, entry, 40)
        hits = [
            v for v, hit in zip(values, al.mask(pa.array(values)).to_pylist(), strict=True) if hit
        ]
        accounts = {_account(v) for v in hits if v.startswith("arn:")}
        assert len(accounts) <= 1, (entry, sorted(a or "" for a in accounts))
        if not entry.startswith("arn:"):
            # A service name matches itself and nothing else: no ARN, no other service.
            assert set(hits) <= {entry}, (entry, hits)
        else:
            assert accounts <= {_account(entry)}, (entry, accounts)
    # Both outcomes are exercised in numbers, or the property says little.
    # sts entries not starting with assumed-role/ are refused (federated users).
    assert accepted > 150 and refused > 1000, (accepted, refused)


def test_property_catch_alls_match_principals_of_several_accounts():
    # The refused list is not merely refused: each really reaches (or is malformed beyond) one
    # account, which is why refusing it is right.
    rng = random.Random(7)
    principals = _random_principals(rng, 3000)
    for entry in CATCH_ALLS:
        al = Allowlist((entry,))  # the constructor does not check
        accounts = {_account(v) for v in principals + _instances(rng, entry, 200) if al.matches(v)}
        accounts.discard(None)
        assert len(accounts) >= 2, (entry, accounts)


# --- commas ------------------------------------------------------------------------------------

COMMA_NAME = "arn:aws:iam::111122223333:user/svc,ci"


@pytest.mark.parametrize(
    "text", [COMMA_NAME, COMMA_NAME + "\n", f"  {COMMA_NAME}  # the service user\n"]
)
def test_a_one_line_value_with_a_part_that_is_no_entry_is_refused_not_split(text):
    # As one line (what SSM makes of a StringList) this is a list of two, and "ci" is no entry:
    # refused, rather than trusting "...:user/svc", another principal.
    with pytest.raises(AllowlistInvalid) as info:
        Allowlist.parse(text, source="ssm:/allow")
    message = str(info.value)
    assert "ssm:/allow" in message and "line 1" in message and "'ci'" in message
    assert "one entry per line" in message


def test_one_entry_per_line_keeps_a_name_with_commas_whole():
    al = Allowlist.parse(f"# service users\n{COMMA_NAME}\n")
    assert al.entries == (COMMA_NAME,)
    assert both(al, COMMA_NAME)
    assert not both(al, "arn:aws:iam::111122223333:user/svc")
    # Kept whole, a "*" after a comma is a glob within the one account, not a catch-all.
    al = Allowlist.parse(f"{ROLE}\n{DEV},*\n")
    assert al.entries == (ROLE, f"{DEV},*")
    assert both(al, f"{DEV},x") and not both(al, DEV)
    assert not both(al, "arn:aws:iam::444455556666:user/dev1,x")
    al = Allowlist.parse(f"{ROLE}\narn:aws:iam::111122223333:role/a,b,c\n{DEV}")
    assert al.entries == (ROLE, "arn:aws:iam::111122223333:role/a,b,c", DEV)


def test_json_entries_are_never_split():
    assert Allowlist.parse(json.dumps([COMMA_NAME])).entries == (COMMA_NAME,)


@pytest.mark.parametrize(
    "text",
    [
        f"{ROLE},{DEV}",  # SSM StringList
        f"{ROLE}, {DEV} ,",
        f"# list\n{ROLE},{DEV}\n",  # a list of valid entries on a line is always a list
    ],
)
def test_a_line_of_valid_entries_is_a_list(text):
    assert Allowlist.parse(text).entries == (ROLE, DEV)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f"{ROLE}\n{DEV}, ci\n", 2),  # the whole line is no entry either (a space)
        (f"{ROLE}\n*,{DEV}\n", 2),  # a catch-all cannot hide in a list
        (f"{ROLE},ci", 1),
    ],
)
def test_a_line_that_is_neither_a_list_nor_one_entry_is_refused(text, line):
    with pytest.raises(AllowlistInvalid, match=f"line {line}"):
        Allowlist.parse(text)


# --- pushes AWS made itself: the source domain -------------------------------------------------

ECR = "ecr.amazonaws.com"


@pytest.mark.parametrize(
    ("user", "issuer", "invoked_by", "domain", "trusted"),
    [
        (None, None, None, ECR, True),  # replication / pull-through cache
        (None, None, None, "codebuild.amazonaws.com", False),
        (None, None, None, None, False),
        (DEV, None, None, ECR, False),  # a caller with an ARN never borrows the domain
        (None, "arn:aws:iam::111122223333:role/other", None, ECR, False),
        (None, None, "ecs.amazonaws.com", ECR, False),
        ("", None, None, ECR, False),  # an empty ARN is still a recorded identity
        (ROLE, None, None, ECR, True),  # trusted by its own ARN
        (None, None, ECR, None, True),
    ],
)
def test_the_domain_decides_only_when_no_identity_is_recorded(
    user, issuer, invoked_by, domain, trusted
):
    al = Allowlist.of([ROLE, ECR])
    assert al.trusts(user, issuer, invoked_by, domain) is trusted
    cols = [pa.array([v], pa.string()) for v in (user, issuer, invoked_by, domain)]
    assert al.trust_mask(*cols).to_pylist() == [trusted]


def test_trust_mask_equals_trusts_on_random_rows():
    rng = random.Random(11)
    pools = [
        [None, None, ROLE, DEV, ""],
        [None, None, ROLE],
        [None, None, ECR, "ecs.amazonaws.com"],
        [None, ECR, "ecs.amazonaws.com", "198.51.100.7"],
    ]
    rows = [[rng.choice(p) for p in pools] for _ in range(3000)]
    cols = [pa.array([r[i] for r in rows], pa.string()) for i in range(4)]
    for al in (Allowlist.of([ROLE, ECR]), Allowlist.of([DEV]), Allowlist.of([])):
        expected = [al.trusts(*r) for r in rows]
        assert al.trust_mask(*cols).to_pylist() == expected
    assert any(Allowlist.of([ECR]).trusts(*r) for r in rows)
    # Columns an object lacks (all null) are no identity: the domain decides.
    n = pa.nulls(2)
    got = Allowlist.of([ECR]).trust_mask(n, n, n, pa.array([ECR, "x.amazonaws.com"]))
    assert got.to_pylist() == [True, False]
    assert Allowlist.of([ECR]).trust_mask(n, n, n, n).to_pylist() == [False, False]


def _aws_push(domain: str | None, **kw: object) -> dict[str, object]:
    fields: dict[str, object] = dict(
        arn=None,
        principal_id=None,
        session_issuer=None,
        session_created_ms=None,
        invoked_by=None,
        src_ip=None,
        src_domain=domain,
        user_agent="AWS Internal",
    )
    fields.update(kw)
    return lake.event(**fields)


@pytest.mark.parametrize("version", [1, 2])
def test_scan_trusts_pushes_aws_made_itself_by_their_domain(version):
    events = [
        _aws_push(ECR),  # trusted by domain
        _aws_push(ECR, time_ms=lake.T0_MS + 1),
        _aws_push("ecr-public.amazonaws.com"),  # another domain: reported
        _aws_push(None),  # nothing recorded: reported
        _aws_push(ECR, arn=DEV),  # an ARN: the domain is not consulted
        _aws_push(
            ECR,
            session_issuer="arn:aws:iam::111122223333:role/other",
            session_created_ms=lake.T0_MS,
        ),
        _aws_push(ECR, invoked_by="ecs.amazonaws.com"),
    ]
    result = scan(parquet_bytes(events, version), Allowlist.of([ECR]))
    assert result.stats.trusted == 2
    found = {(f.user, f.field("src_domain")): f.count for f in result.aggregate.findings()}
    assert found == {
        (None, "ecr-public.amazonaws.com"): 1,
        (None, None): 1,
        (DEV, ECR): 1,
        (None, ECR): 2,  # issuer-only and invoked_by-only rows: untrusted, domain carried along
    }
    assert sum(found.values()) == len(events) - 2
    # Without the entry, every one of them is reported.
    assert sum(f.count for f in scan(parquet_bytes(events, version)).aggregate.findings()) == 7


# --- failing closed: scan exits 2, the Lambda fails every record --------------------------------


def test_scan_with_a_catch_all_allowlist_exits_2_naming_the_entry(tmp_path):
    from detector.app.cli import main

    obj = tmp_path / "o.parquet"
    lake.write_object(obj, [lake.event(arn=DEV, session_issuer=None)], 2)
    allow = tmp_path / "allow.txt"
    allow.write_text(f"# CI\n{ROLE}\narn:aws:*\n")
    out, err = io.StringIO(), io.StringIO()
    assert main(["scan", str(obj), "--allowlist", str(allow)], out=out, err=err) == 2
    assert "line 3" in err.getvalue() and "'arn:aws:*'" in err.getvalue()
    assert "any account" in err.getvalue()
    assert out.getvalue() == ""  # nothing judged


def test_the_lambda_pipeline_fails_every_record_on_a_catch_all_in_ssm(monkeypatch):
    from moto import mock_aws

    from detector.app import pipeline
    from detector.aws.ssm import AllowlistStore
    from detector.core.objects import ObjectRef
    from detector.lake.notifications import Batch, Item

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")

    class Untouched:
        def open(self, ref: ObjectRef) -> io.BytesIO:
            raise AssertionError("no object is read without a valid allowlist")

        def security_hub(self, *a: object, **kw: object) -> None:
            raise AssertionError("nothing is published")

        def notify(self, *a: object, **kw: object) -> None:
            raise AssertionError("nothing is published")

    with mock_aws():
        import boto3

        ssm = boto3.client("ssm")
        ssm.put_parameter(Name="/allow", Type="StringList", Value=f"{ROLE},*")
        store = AllowlistStore("/allow", ssm)
        items = [Item(f"m{i}", [ObjectRef(lake.key_for(2), "lake")]) for i in range(3)]
        outcome = pipeline.process(Batch(True, items), store, Untouched(), Untouched())
    assert outcome.failed == items
    [error] = outcome.errors
    assert "ssm:/allow" in error and "'*'" in error and "line 1" in error


@pytest.mark.parametrize(
    "entry",
    [
        "arn:aws:sts::111122223333:federated-user/alice",
        "arn:aws:sts::111122223333:federated-user/*",
        "arn:aws:sts::111122223333:*",  # matches every federated name too
        "arn:aws:sts::111122223333:fed*",
        "arn:aws-cn:sts::111122223333:federated-user/ci-deployer",
    ],
)
def test_federated_user_entries_are_refused_naming_the_issuer_to_list(entry):
    """sts:GetFederationToken lets its caller pick the name: such an entry trusts anyone who
    may call it in the account (PowerUserAccess may)."""
    with pytest.raises(AllowlistInvalid) as info:
        Allowlist.parse(entry, source="ssm:/allowlist")
    message = str(info.value)
    assert "federated user" in message and "GetFederationToken" in message
    assert ":iam::111122223333:user/NAME" in message and "ssm:/allowlist" in message


# --- account lists ----------------------------------------------------------------------------

LISTED = {"ci": ("111122223333", "444455556666")}


@pytest.mark.parametrize(
    "text",
    [
        "arn:aws:iam::{ci}:role/deployer",
        "# comment\narn:aws:iam::{ci}:role/deployer\n",
        '["arn:aws:iam::{ci}:role/deployer"]',
        "arn:aws:iam::{ci}:role/deployer, arn:aws:iam::{ci}:role/deployer",
    ],
)
def test_an_account_list_entry_becomes_one_entry_per_listed_account(text):
    allowlist = Allowlist.parse(text, accounts=LISTED)
    assert allowlist.entries == (
        "arn:aws:iam::111122223333:role/deployer",
        "arn:aws:iam::444455556666:role/deployer",
    )
    assert allowlist.matches("arn:aws:iam::444455556666:role/deployer")
    assert not allowlist.matches("arn:aws:iam::999988887777:role/deployer")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("arn:aws:iam::{other}:role/x", "'other', which does not exist (account lists: ci)"),
        ("arn:aws:iam::{c i}:role/x", "a list name is letters"),
        ("arn:aws:sts::{ci}:federated-user/x", "federated user"),
        ("arn:aws:iam::{ci}:", "has no resource"),
    ],
)
def test_account_list_entries_that_cannot_be_trusted_are_refused(text, why):
    with pytest.raises(AllowlistInvalid, match="line 1") as info:
        Allowlist.parse(text, source="ssm:/a", accounts=LISTED)
    assert why in str(info.value)


def test_an_account_list_holds_only_account_ids():
    from detector.core.allowlist import account_list

    assert account_list("111122223333, 444455556666\n# x\n111122223333", "s") == (
        "111122223333",
        "444455556666",
    )
    for bad in ("1111-2222-3333", "*", "11112222333", "١١١١٢٢٢٢٣٣٣٣", ""):
        with pytest.raises(AllowlistInvalid):
            account_list(bad, "s")


@pytest.mark.parametrize(
    "entry",
    [
        "arn:aws:sts::111122223333:*/gitlab-runner",
        "arn:aws:sts::111122223333:?ederated-user/ci",
        "arn:aws:sts::111122223333:*ci-bot*",
        "arn:aws:sts::111122223333:f?derated-user/*",
    ],
)
def test_sts_globs_that_could_reach_a_federated_user_are_refused(entry):
    """Found by an attacker's pass: each of these matched a federated user it picked."""
    problem = entry_problem(entry)
    assert problem is not None and "federated user" in problem
    assert entry_problem("arn:aws:sts::111122223333:assumed-role/ci-*/*") is None
