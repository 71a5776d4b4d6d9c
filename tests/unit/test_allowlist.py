"""Allowlist parsing (lines, StringList, JSON) and matching (exact, glob, vectorised)."""

from __future__ import annotations

import json
import random
import string

import pyarrow as pa
import pytest

from detector.allowlist import Allowlist
from detector.errors import AllowlistInvalid

ROLE = "arn:aws:iam::111122223333:role/ci-deployer"
SESSION = "arn:aws:sts::111122223333:assumed-role/ci-deployer/build-1"
DEV = "arn:aws:iam::111122223333:user/dev1"


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
    al = Allowlist.parse(f'  \n["{ROLE}", "arn:aws:iam::*:user/dev?", ""]\n')
    assert al.entries == (ROLE, "arn:aws:iam::*:user/dev?")
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
    "entries", [["ok", "with space"], ["ok", "esc\x1b"], ["ok", "nul\x00"], ["ok", "vt\x0bx"]]
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
    al = Allowlist.of(["arn:aws:sts::*:assumed-role/ci-deployer/*"])
    assert both(al, SESSION)
    assert both(al, "arn:aws:sts::444455556666:assumed-role/ci-deployer/x")
    assert not both(al, "arn:aws:sts::444455556666:assumed-role/other/x")


@pytest.mark.parametrize(
    ("entry", "value"),
    [
        ("role/ci", "arn:aws:iam::111122223333:role/ci"),
        ("role/ci", "role/ci-deployer"),
        ("user/dev?", "arn:aws:iam::111122223333:user/dev1"),
        ("user/dev?", "user/dev1x"),
        ("*:user/dev1", "arn:aws:iam::111122223333:user/dev1/extra"),
        ("arn:*", "xarn:aws"),
    ],
)
def test_no_substring_match(entry, value):
    assert not both(Allowlist.of([entry]), value)


@pytest.mark.parametrize(
    "entry", [ROLE, "arn:aws:iam::*:role/ci-deployer", "arn:aws:iam::111122223333:role/ci-deploye?"]
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
        ("arn:a.b", "arn:a.b", "arn:aXb"),
        ("a+b", "a+b", "aab"),
        ("role/(ci)", "role/(ci)", "role/ci"),
        ("role/(ci|cd)*", "role/(ci|cd)-x", "role/ci"),
        ("x[ab]y", "x[ab]y", "xay"),
        ("x^y$", "x^y$", "xy"),
        ("x{2}", "x{2}", "xx"),
        ("a\\d", "a\\d", "a1"),
        ("a.*b", "a.xyzb", "aXb"),
        ("a?.b", "aZ.b", "aZXb"),
    ],
)
def test_regex_metacharacters_are_literal(entry, matching, not_matching):
    al = Allowlist.of([entry])
    assert both(al, matching)
    assert not both(al, not_matching)


def test_every_printable_punctuation_is_literal_in_a_glob():
    entries = [f"x{c}*" for c in string.punctuation if c not in "*?"]
    al = Allowlist.of(entries)
    for c in string.punctuation:
        if c in "*?":
            continue
        assert both(al, f"x{c}tail")
    assert not both(al, "xatail")


def _values(rng: random.Random, n: int) -> list[str | None]:
    pool = [
        ROLE, SESSION, DEV, "arn:aws:iam::111122223333:user/dev",
        "arn:aws:iam::111122223333:user/dev12",
        "codebuild.amazonaws.com", "ecs.amazonaws.com", "", "\n", ROLE + "\n", "a.b", "aXb", "a+b",
        "café", "😀", "\u202eevil", "\x00", "x\x1b[31my", None,
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
        [ROLE, "arn:aws:iam::111122223333:user/dev?", "arn:aws:sts::*:assumed-role/ci-deployer/*",
         "codebuild.amazonaws.com", "a.b", "a+b", "caf?", "*evil"]
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
    for al in (Allowlist.of([ROLE, DEV]), Allowlist.of(["*dev?", "*/build-?"])):
        assert al.mask(pa.array(values)).to_pylist() == [al.matches(v) for v in values]


def test_none_and_null_columns_never_match():
    al = Allowlist.of(["*"])
    assert not al.matches(None)
    assert al.matches("")
    assert al.mask(pa.array([None, "x"], pa.string())).to_pylist() == [False, True]
    assert al.mask(pa.nulls(3)).to_pylist() == [False, False, False]
    assert al.mask(pa.nulls(2), pa.array(["x", None])).to_pylist() == [True, False]


@pytest.mark.parametrize("text", ["", "   \n\n", "# nothing yet\n\n# still nothing\n", ",,", "[]"])
def test_empty_allowlist_matches_nothing(text):
    al = Allowlist.parse(text)
    assert al.empty
    assert al.entries == ()
    for v in (ROLE, "", "*", None):
        assert not both(al, v)
    assert al.mask(pa.array([ROLE, None, ""]), pa.array(["a", "b", None])).to_pylist() == [
        False, False, False,
    ]
    assert al.mask(pa.array([ROLE] * 2000)).to_pylist() == [False] * 2000


def test_non_empty_allowlist_is_not_empty():
    assert not Allowlist.parse(ROLE).empty
    assert not Allowlist.of(["*"]).empty
