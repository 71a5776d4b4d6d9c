"""Request-JSON tests (``detector.core.requestjson``): the Python evaluation and the SQL/JSON path
text agree (the text run by ``tests.sqljson``, an implementation of its own) on documents of
every shape a request takes, including hostile ones; and what cannot be judged is no match,
never an error."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from detector.core import requestjson as rj
from tests import sqljson

CONDS = [
    rj.eq("egress", "false"),
    rj.eq("aclProtocol", "-1", "all"),
    rj.lt("Rule.NoncurrentVersionExpiration.NoncurrentDays", 3),
    rj.present("masterUserPassword"),
    rj.prefix("Action", "kms:"),
    rj.eq("createVolumePermission.add.items.group", "all"),
    rj.some("Statement", rj.all_of(rj.eq("Effect", "Allow"), rj.eq("Resource", "*"))),
    rj.any_of(rj.eq("a.b", "x"), rj.all_of(rj.present("c"), rj.lt("d", 0.5))),
]
LEAVES: list[Any] = [
    "false",
    False,
    True,
    "-1",
    -1,
    2,
    "2",
    2.5,
    "all",
    "x",
    None,
    "*",
    "kms:Get",
    "Allow",
]


def _doc(rng: random.Random, depth: int = 0) -> Any:
    keys = [
        "egress",
        "aclProtocol",
        "Rule",
        "NoncurrentVersionExpiration",
        "NoncurrentDays",
        "masterUserPassword",
        "Action",
        "createVolumePermission",
        "add",
        "items",
        "group",
        "Statement",
        "Effect",
        "Resource",
        "a",
        "b",
        "c",
        "d",
    ]
    if depth > 3 or rng.random() < 0.3:
        return rng.choice(LEAVES)
    if rng.random() < 0.3:
        return [_doc(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(keys): _doc(rng, depth + 1) for _ in range(rng.randint(1, 4))}


def _along(rng: random.Random, paths: list[str]) -> dict[str, Any]:
    """A document with values along the condition's paths: each step an object, a list of
    objects or (sometimes) a leaf too early; the last step a leaf or a list of leaves."""
    doc: dict[str, Any] = {}
    leaves = [p for p in paths if not any(q.startswith(p + ".") for q in paths)]
    for path in leaves:
        node: Any = doc
        keys = path.split(".")
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            if not isinstance(node, dict):
                break
            if last or rng.random() < 0.05:
                leaf = rng.choice(LEAVES)
                node[key] = [leaf, rng.choice(LEAVES)] if rng.random() < 0.3 else leaf
                break
            child = node.get(key)
            if child is None:
                child = {} if rng.random() < 0.7 else [{}, {}]
                node[key] = child
            node = rng.choice(child) if isinstance(child, list) and child else child
    return doc


def _sql_holds(cond: rj.Cond, doc: Any) -> bool:
    """What the SQL text says of ``doc`` (the top-level test, as ``json_sql`` writes it)."""
    text = json.dumps(doc)
    if isinstance(cond, rj.All):
        return all(_sql_holds(p, doc) for p in cond.parts)
    if isinstance(cond, rj.Any_):
        return any(_sql_holds(p, doc) for p in cond.parts)
    return bool(sqljson.json_exists(text, f"lax $ ? ({rj.path_filter(cond)})"))


@pytest.mark.parametrize("cond", CONDS, ids=rj.describe)
def test_python_and_sql_path_agree_on_random_documents(cond: rj.Cond) -> None:
    rng = random.Random(rj.describe(cond))
    agreed = {True: 0, False: 0}
    for _ in range(3000):
        doc = _doc(rng) if rng.random() < 0.3 else _along(rng, rj.paths(cond))
        if not isinstance(doc, dict):
            doc = {"wrapped": doc}
        got = rj.holds(cond, doc)
        assert got == _sql_holds(cond, doc), (rj.describe(cond), doc)
        agreed[got] += 1
    assert agreed[False] > 0 and agreed[True] > 0  # both outcomes met


def test_values_compare_as_text_in_either_version() -> None:
    v2 = {
        "egress": False,
        "aclProtocol": -1,
        "Rule": [{"NoncurrentVersionExpiration": {"NoncurrentDays": 1}}],
    }
    v1 = rj.from_flattened(
        {
            "requestParameters.egress": "false",
            "requestParameters.aclProtocol": "-1",
            "requestParameters.Rule": json.dumps(
                [{"NoncurrentVersionExpiration": {"NoncurrentDays": "1"}}]
            ),
        }
    )
    for doc in (v2, v1):
        assert rj.holds(CONDS[0], doc) and rj.holds(CONDS[1], doc) and rj.holds(CONDS[2], doc)


def test_a_policy_document_is_decoded_and_folded() -> None:
    cond = rj.decoded(
        "policy",
        rj.some("statement", rj.all_of(rj.eq("effect", "allow"), rj.prefix("action", "kms:"))),
        fold=True,
    )
    policy = {"Statement": [{"Effect": "Allow", "Action": ["KMS:Encrypt"], "Principal": "*"}]}
    assert rj.holds(cond, {"policy": json.dumps(policy)})
    assert not rj.holds(cond, {"policy": policy})  # only a string is a document, as in SQL
    flat = rj.from_flattened({"requestParameters.policy": json.dumps(policy)})
    assert rj.holds(cond, flat)  # a string starting with "{" stays a string in v1
    with pytest.raises(ValueError, match="lower case"):
        rj.decoded("policy", rj.eq("Effect", "allow"), fold=True)
    with pytest.raises(ValueError, match="cannot nest"):
        rj.decoded("a", rj.decoded("b", rj.present("c")))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{not json",
        "[" * 5000 + "]" * 5000,
        '{"egress": ' + "[" * 100 + "false" + "]" * 100 + "}",
        '"just a string"',
        "null",
        "1e999",
        '{"egress": "\\ud800"}',
    ],
)
def test_hostile_requests_are_no_match_never_an_error(text: str) -> None:
    doc = rj.parse(text)
    for cond in CONDS:
        assert rj.holds(cond, doc) in (True, False)
    assert rj.parse("[" * 5000 + "]" * 5000) is None  # past MAX_DEPTH: not judged


def test_bad_declarations_are_refused() -> None:
    for bad in (lambda: rj.eq("a.b-c", "x"), lambda: rj.lt("a", "three"), lambda: rj.eq("a")):
        with pytest.raises((ValueError, TypeError)):
            bad()  # type: ignore[no-untyped-call]
