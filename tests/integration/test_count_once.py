"""An object counts once: however it is announced (with or without an ETag) and however often
`scan` is told about it (a file and its directory, overlapping prefixes)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from detector.app.pipeline import process
from detector.aws.dynamodb import StateTable
from detector.aws.s3 import S3Store
from detector.core.allowlist import Allowlist
from detector.core.objects import ObjectRef
from detector.lake.notifications import Batch, Item
from tests import lake
from tests.integration.test_cli import run
from tests.integration.world import create_state_table

BUCKET = "lake"
TABLE = "state"
INTRUDER = f"arn:aws:iam::{lake.ACCOUNT}:user/intruder"


class Allow:
    def get(self) -> Allowlist:
        return Allowlist.parse(lake.CI_ROLE)


class Sink:
    """Records what would be published."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def security_hub(self, alerts: Any, created_at: Any = None, *, deadline: Any = None) -> Any:
        from detector.aws.securityhub import Report

        return Report(imported=len(alerts))

    def notify(self, alerts: Any) -> None:
        self.counts.append(sum(a.count for a in alerts))


def body(events: int) -> bytes:
    buf = io.BytesIO()
    rows = [
        lake.event(arn=INTRUDER, session_issuer=None, time_ms=lake.T0_MS + i) for i in range(events)
    ]
    lake.write_object(buf, rows, 2)
    return buf.getvalue()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.mark.parametrize("order", ["without-then-with", "with-then-without", "without-twice"])
def test_an_announcement_without_an_etag_counts_the_object_once(s3: Any, order: str):
    create_state_table(TABLE)
    key = lake.key_for(2, name="no-etag")
    etag = s3.put_object(Bucket=BUCKET, Key=key, Body=body(3))["ETag"].strip('"')
    bare = ObjectRef(key=key, bucket=BUCKET)
    tagged = ObjectRef(key=key, bucket=BUCKET, etag=etag)
    first, second = {
        "without-then-with": (bare, tagged),
        "with-then-without": (tagged, bare),
        "without-twice": (bare, bare),
    }[order]
    state, sink = StateTable(TABLE), Sink()
    outcomes = [
        process(
            Batch(from_sqs=True, items=[Item(id="m", refs=[ref])]),
            Allow(),
            S3Store(),
            sink,
            state=state,
            window_seconds=0,
        )
        for ref in (first, second)
    ]
    assert [o.failed for o in outcomes] == [[], []]
    assert outcomes[1].duplicates == [f"s3://{BUCKET}/{key}"]
    assert sink.counts == [3]  # the second announcement neither counts nor alerts
    items = state.client.scan(TableName=TABLE)["Items"]
    objects = [i["pk"]["S"] for i in items if i["pk"]["S"].startswith("obj#")]
    assert objects == [f"obj#{BUCKET}/{key}#{etag}"]  # claimed under the object's real ETag


@pytest.fixture
def allowlist(tmp_path: Path) -> Path:
    path = tmp_path / "allowlist.txt"
    path.write_text(f"{lake.CI_ROLE}\n")
    return path


def counts(out: str) -> int:
    return sum(json.loads(line)["count"] for line in out.splitlines())


def test_scan_reads_a_file_named_twice_once(tmp_path: Path, allowlist: Path):
    root = tmp_path / "lake"
    path = root / lake.key_for(2)
    path.parent.mkdir(parents=True)
    path.write_bytes(body(2))
    sub = path.parent
    link = tmp_path / "link.parquet"
    link.symlink_to(path)
    code, out, err = run(
        "scan",
        str(path),
        str(root),
        str(sub),
        str(link),
        "--allowlist",
        str(allowlist),
        "--format",
        "jsonl",
    )
    assert code == 0, err
    assert counts(out) == 2  # not 8
    assert "3 object(s) named more than once, scanned once" in err


def test_scan_reads_an_s3_key_under_two_prefixes_once(s3: Any, allowlist: Path):
    key = lake.key_for(2)
    s3.put_object(Bucket=BUCKET, Key=key, Body=body(4))
    prefix = key.rsplit("/", 1)[0]
    code, out, err = run(
        "scan",
        f"s3://{BUCKET}/aws/",
        f"s3://{BUCKET}/{prefix}/",
        "--allowlist",
        str(allowlist),
        "--format",
        "jsonl",
    )
    assert code == 0, err
    assert counts(out) == 4  # not 8
