"""Every example every detection declares (``Detection.examples``), scanned as a Security Lake
object of each version: the example is reported exactly when its detection has a finding."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from detector import detections
from detector.analysis import engine
from detector.analysis.findings import reported
from detector.core.allowlist import Allowlist
from detector.core.spec import Detection, Example
from tests.lake import event, key_for, write_object

# (version, v1 request layout): both versions, and v1's two ways of holding the request.
LAYOUTS = [(1, "flattened"), (1, "json"), (2, "flattened")]

CASES = [
    pytest.param(detection, example, id=f"{slug}: {example.name}")
    for slug, detection in detections.registry().items()
    for example in detection.examples
]


def example_event(example: Example) -> dict[str, Any]:
    fields = dict(example.event)
    if example.request is not None:
        fields["request_json"] = json.dumps(example.request)
    return event(**fields)


def example_events(example: Example) -> list[dict[str, Any]]:
    """The example's events: its event, then one per ``more`` (the event with those changes)."""
    first = example_event(example)
    return [first] + [
        event(**(first | {"event_uid": None, "request_uid": None} | dict(m))) for m in example.more
    ]


def test_every_detection_has_examples_of_both_outcomes():
    for slug, detection in detections.registry().items():
        outcomes = {example.reported for example in detection.examples}
        assert outcomes == {True, False}, slug
        names = [example.name for example in detection.examples]
        assert len(names) == len(set(names)), slug


@pytest.mark.parametrize(("version", "v1_request"), LAYOUTS, ids=lambda v: str(v))
@pytest.mark.parametrize(("detection", "example"), CASES)
def test_example(detection: Detection, example: Example, version: int, v1_request: str):
    buf = io.BytesIO()
    layout = {"v1_request": v1_request} if version == 1 else {}
    write_object(buf, example_events(example), version, **layout)
    name = f"{detection.slug}.gz.parquet"
    active = detections.activate([detection.slug], example.options)
    result = engine.scan_object(
        io.BytesIO(buf.getvalue()),
        name,
        Allowlist.of(example.allowlist),
        key=key_for(version),
        active=active,
    )
    findings = reported(result.aggregates[detection.id].findings())
    assert bool(findings) == example.reported, example.name
    if findings:
        assert sum(f.count for f in findings) == 1 + len(example.more)
