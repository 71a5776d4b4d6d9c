"""``ecr-upload-detector test``: run detections' examples, and records from a file, through the
real reader, and say which pass.

Each case is written as a Security Lake object (``detector.lake.records``) of every layout it can
have: a detection's example and a CloudTrail record as v2, v1 with the request flattened and
v1 with it whole; an OCSF record as its own version. It passes when, in every layout, the
detection reports it exactly when it should (thresholds included: an example may be several
calls). Records come from a JSON file: one record, a list, or cases
``{"name": …, "detection": SLUG, "reported": true|false, "record": {…}}`` (or ``"records"``:
a list making one case, for a threshold); a bare record is expected to be reported by every
detection tested.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from detector import detections
from detector.analysis import engine
from detector.analysis.findings import reported
from detector.core.allowlist import Allowlist
from detector.core.errors import BadObject, ConfigError
from detector.core.spec import Detection, Example
from detector.lake import records

# (version, v1 request layout) every case of flat fields is written in.
LAYOUTS: tuple[tuple[int, str], ...] = ((2, "flattened"), (1, "flattened"), (1, "json"))


@dataclass
class Case:
    detection: Detection
    name: str
    expected: bool
    events: list[dict[str, Any]]
    layouts: tuple[tuple[int, str], ...] = LAYOUTS
    options: Mapping[str, str] = field(default_factory=dict)
    allowlist: tuple[str, ...] = ()


@dataclass
class Result:
    case: Case
    # layout name -> reported?, or the error that stopped the read
    got: dict[str, bool | str]

    @property
    def passed(self) -> bool:
        return all(v is self.case.expected for v in self.got.values())


def example_case(detection: Detection, example: Example) -> Case:
    """An example as a case; unless it says otherwise, a call of the detection's first
    operation (as in the test suite's fixtures)."""
    given = dict(example.event)
    if detection.operations:
        given.setdefault("operation", detection.operations[0])
    if detection.asff is not None:
        given.setdefault("service", detection.asff.service)
    first = records.event(given, example.request)
    more = [records.event(first | {"event_uid": None} | dict(m)) for m in example.more]
    return Case(
        detection,
        example.name,
        example.reported,
        [first, *more],
        options=example.options,
        allowlist=example.allowlist,
    )


def record_cases(data: Any, slugs: Sequence[str], source: str) -> list[Case]:
    """Cases from a records file's JSON (see the module docstring)."""
    items = data if isinstance(data, list) else [data]
    cases = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, Mapping):
            raise records.RecordInvalid(f"{source}: item {i} is not a JSON object")
        wrapped = "record" in item or "records" in item
        raw = item.get("records") or [item.get("record")] if wrapped else [item]
        if not isinstance(raw, list) or not raw:
            raise records.RecordInvalid(f"{source}: item {i}: records must be a list")
        built = [records.from_any(r) for r in raw]
        versions = {v for _, v in built}
        if len(versions) > 1:
            raise records.RecordInvalid(f"{source}: item {i} mixes record kinds or versions")
        version = versions.pop()
        layouts = LAYOUTS if version is None else ((version, "flattened"),)
        expected = item.get("reported", True) if wrapped else True
        if not isinstance(expected, bool):
            raise records.RecordInvalid(f"{source}: item {i}: reported is true or false")
        named = item.get("detection") if wrapped else None
        if named is not None and not isinstance(named, str):
            raise records.RecordInvalid(f"{source}: item {i}: detection is a slug (text)")
        for slug in [named] if isinstance(named, str) else slugs:
            name = item.get("name") if wrapped and isinstance(item.get("name"), str) else None
            cases.append(
                Case(
                    detections.get(slug),
                    f"{source} #{i}" + (f" ({name})" if name else ""),
                    expected,
                    [e for e, _ in built],
                    layouts,
                )
            )
    return cases


def run(case: Case) -> Result:
    got: dict[str, bool | str] = {}
    try:
        active = detections.activate([case.detection.slug], case.options)
    except ConfigError as exc:
        return Result(case, {"options": str(exc)})
    for version, v1_request in case.layouts:
        label = f"v{version}" + (f" {v1_request}" if version == 1 else "")
        try:
            data = records.parquet(case.events, version, v1_request)
        except (pa.ArrowException, ValueError, TypeError, UnicodeError) as exc:
            got[label] = f"cannot be written as an object: {exc}"
            continue
        try:
            result = engine.scan_object(
                io.BytesIO(data),
                label,
                Allowlist.of(case.allowlist),
                key=records.key(version),
                active=active,
            )
        except BadObject as exc:
            got[label] = str(exc)
            continue
        got[label] = bool(reported(result.aggregates[case.detection.id].findings()))
    return Result(case, got)


def render(result: Result) -> str:
    case = result.case
    word = "PASS" if result.passed else "FAIL"
    want = "reported" if case.expected else "not reported"
    line = f"{word}  {case.detection.slug}: {case.name} (expected {want})"
    if not result.passed:
        wrong = [
            f"{k}: {'reported' if v is True else 'not reported' if v is False else v}"
            for k, v in result.got.items()
            if v is not case.expected
        ]
        line += " -- " + "; ".join(wrong)
    return line
