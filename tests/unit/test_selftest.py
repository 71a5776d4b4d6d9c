"""The catalogue as users see it: ``ecr-upload-detector detections`` lists the 27 ESCU "ASL AWS"
detections, ``DETECTIONS`` chooses them by slug, type or ``all`` (Hunting off in the Lambda
unless named), and ``ecr-upload-detector test`` runs every spec's examples and records from a
file through the real reader, failing with a non-zero status when one does not hold."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from detector import detections
from detector.app import cli
from detector.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
# ESCU's ids of the 27 active "ASL AWS" detections (splunk/security_content, 2026-05-13).
ESCU_IDS = {
    "b3424bbe-3204-4469-887b-ec144483a336",
    "81a9f2fe-1697-473c-af1d-086b0d8b63c8",
    "22cc7a62-3884-48c4-82da-592b8199b72f",
    "a79b607a-50cc-4704-bb9d-eff280cb78c2",
    "d15e9bd9-ef64-4d84-bc04-f62955a9fee8",
    "1f0b47e5-0134-43eb-851c-e3258638945e",
    "0f701b38-a0fb-43fd-a83d-d12265f71f33",
    "5029b681-0462-47b7-82e7-f7e3d37f5a2d",
    "986565a2-7707-48ea-9590-37929cebc938",
    "0b78a8f9-1d31-4d23-85c8-56ad13d5b4c1",
    "f3eb471c-16d0-404d-897c-7653f0a78cba",
    "16ae9076-d1d5-411c-8fdd-457504b33dac",
    "f32598bb-fa5f-4afd-8ab3-0263cc28efbc",
    "00af8f7f-e004-446b-9bba-2732f717ae27",
    "739ed682-27e9-4ba0-80e5-a91b97698213",
    "886a8f46-d7e2-4439-b9ba-aec238e31732",
    "a4f39755-b1e2-40bb-b2dc-4449c45b0bf2",
    "726959fe-316d-445c-a584-fa187d64e295",
    "609ced68-d420-4ff7-8164-ae98b4b4018c",
    "8d12f268-c567-4557-9813-f8389e235c06",
    "1bbe54f1-93d7-4764-8a01-ddaa12ece7ac",
    "4d2df5e0-1092-4817-88a8-79c7fa054668",
    "a2625034-c2de-44fc-b45c-7bac9c4a7974",
    "e010ddf5-e9a5-44e5-bdd6-0c919ba8fc8b",
    "33ae0931-2a03-456b-b1d7-b016c5557fbd",
    "635c26cc-0fd1-4098-8ec9-824bf9544b11",
    "5b3f63a3-865b-4637-9941-f98bd1a50c0d",
}


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_the_registry_is_the_catalogue():
    registry = detections.registry()
    assert {d.id for d in registry.values()} == ESCU_IDS
    counts = {t: sum(d.escu_type == t for d in registry.values()) for t in ("TTP", "Anomaly")}
    assert counts == {"TTP": 14, "Anomaly": 8}
    kinds = {d.kind for d in registry.values()}
    assert kinds == {"filter", "request", "time", "threshold", "window"}


def test_detections_lists_all_with_type_shape_and_lambda_switch(monkeypatch):
    monkeypatch.setenv("DETECTIONS", "all")
    code, out, _ = run("detections")
    assert code == 0
    lines = [line.split("\t") for line in out.splitlines()]
    assert {fields[1] for fields in lines} == ESCU_IDS
    by_slug = {fields[0]: fields for fields in lines}
    hunting = by_slug["create-access-key"]
    assert hunting[6:] == ["Hunting", "filter", "v7", "lambda: off"]
    assert by_slug["iam-assume-role-policy-brute-force"][6:8] == ["TTP", "threshold"]
    assert by_slug["concurrent-sessions-from-different-ips"][7] == "window"
    assert by_slug["disable-bucket-versioning"][7:] == ["request", "v7", "lambda: on"]
    # The stable columns keep their places.
    assert by_slug[detections.DEFAULT][4] == "default"


def test_default_environment_runs_the_unknown_user_detection_only(monkeypatch):
    monkeypatch.delenv("DETECTIONS", raising=False)
    _, out, _ = run("detections")
    on = [line.split("\t")[0] for line in out.splitlines() if line.endswith("lambda: on")]
    assert on == [detections.DEFAULT]


def test_groups_choose_by_type_and_leave_hunting_out_of_the_lambda():
    registry = detections.registry()
    every = detections.choose(["all"])
    assert set(every) == set(registry)
    in_lambda = detections.choose(["all"], in_lambda=True)
    assert {registry[s].escu_type for s in in_lambda} == {"TTP", "Anomaly"}
    assert len(in_lambda) == 22
    assert {registry[s].escu_type for s in detections.choose(["TTP"])} == {"TTP"}
    # Named, a Hunting detection runs in the Lambda too; so does the word hunting.
    named = detections.choose(["anomaly", "create-access-key"], in_lambda=True)
    assert "create-access-key" in named and len(named) == 9
    assert len(detections.choose(["hunting"], in_lambda=True)) == 5
    assert detections.choose(["ttp", "ttp", "defense-evasion-delete-cloudtrail"]) == (
        detections.choose(["ttp"])
    )
    with pytest.raises(ConfigError, match="all, ttp, anomaly, hunting"):
        detections.choose(["everything"])


def test_every_example_passes_through_the_command():
    code, out, _ = run("test")
    total = sum(len(d.examples) for d in detections.registry().values())
    assert code == 0, out
    assert out.splitlines()[-1] == f"{total} passed, 0 failed"
    assert out.count("PASS  ") == total


def test_the_sample_records_pass():
    code, out, _ = run(
        "test", "--no-examples", "--records", str(ROOT / "docs/examples/records-escu.json")
    )
    assert code == 0, out
    assert out.splitlines()[-1] == "4 passed, 0 failed"


def test_a_wrong_expectation_fails_with_status_1(tmp_path):
    record = json.loads((ROOT / "docs/examples/records-escu.json").read_text())[0]["record"]
    cases = [
        {
            "name": "stop logging is reported",
            "detection": "defense-evasion-stop-logging-cloudtrail",
            "reported": False,
            "record": record,
        },
        record,  # bare: expected reported by every detection named
    ]
    path = tmp_path / "records.json"
    path.write_text(json.dumps(cases))
    code, out, _ = run(
        "test",
        "defense-evasion-stop-logging-cloudtrail",
        "disable-bucket-versioning",
        "--no-examples",
        "--records",
        str(path),
    )
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("FAIL  defense-evasion-stop-logging-cloudtrail")
    assert "v2: reported" in lines[0] and "v1 json: reported" in lines[0]
    assert lines[1].startswith("PASS  defense-evasion-stop-logging-cloudtrail")
    assert lines[2].startswith("FAIL  disable-bucket-versioning")
    assert lines[-1] == "1 passed, 2 failed"


def test_a_failing_example_fails_the_command(monkeypatch):
    detection = detections.get("disable-bucket-versioning")
    import dataclasses

    wrong = dataclasses.replace(detection.examples[0], reported=not detection.examples[0].reported)
    broken = dataclasses.replace(detection, examples=(wrong,))
    monkeypatch.setitem(detections.registry(), detection.slug, broken)
    code, out, _ = run("test", detection.slug)
    assert code == 1 and out.startswith("FAIL  ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("test", "no-such-detection"), "unknown detection"),
        (("test", "--records", "/nonexistent.json"), "--records"),
    ],
)
def test_usage_errors(argv, message):
    code, _, err = run(*argv)
    assert code == 2 and message in err


def test_bad_records_are_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"hello": "world"}]))
    code, _, err = run("test", "--no-examples", "--records", str(path))
    assert code == 2 and "neither a CloudTrail record" in err


def test_the_docs_table_is_the_specs():
    """docs/detections.md holds the catalogue tables as generated from the specs: a spec
    changed without the page (or the page by hand) fails here, printing what to paste."""
    import subprocess
    import sys

    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts/detections_table.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    page = (ROOT / "docs/detections.md").read_text(encoding="utf-8")
    assert generated in page, generated
    # Every one of the 27 is in it, with its deviations.
    assert all(d.id in page for d in detections.registry().values())
    assert all(text in page for d in detections.registry().values() for text in d.deviations)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"eventName": "StopLogging", "userIdentity": "root"}, "unexpected shape"),
        ({"eventName": "StopLogging", "userAgent": 7}, "user_agent is int"),
        ({"api": {"operation": "StopLogging"}, "time": "noon"}, "time_ms is str"),
        ({"name": "x", "detection": 5, "record": {"eventName": "StopLogging"}}, "a slug"),
    ],
)
def test_records_of_the_wrong_shape_are_named_not_crashes(tmp_path, record, message):
    path = tmp_path / "records.json"
    path.write_text(json.dumps([record]))
    code, _, err = run("test", "--no-examples", "--records", str(path))
    assert code == 2 and message in err and "internal error" not in err


def test_a_records_file_nested_past_the_parser_is_a_usage_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = run("test", "--no-examples", "--records", str(path))
    assert code == 2 and "--records" in err
