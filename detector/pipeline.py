"""One invocation: announced objects in, findings out to the alert sinks.

All objects of an invocation are aggregated together, like one run of the Splunk search. An
item (an SQS record, or the whole direct event) succeeds only when every object in it was read
and the findings it contributed were delivered; otherwise it is reported as failed so Lambda
retries it and, in the end, dead-letters it. Nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import IO, Protocol

from detector.allowlist import Allowlist
from detector.engine import ObjectResult, Run, scan_object
from detector.errors import (
    AllowlistInvalid,
    AllowlistUnavailable,
    BadObject,
    ObjectUnreadable,
    PublishFailed,
)
from detector.findings import Finding
from detector.notifications import Batch, Item
from detector.objects import ObjectRef


class AllowlistSource(Protocol):
    def get(self) -> Allowlist: ...


class ObjectSource(Protocol):
    def open(self, ref: ObjectRef) -> IO[bytes]: ...


Alert = Callable[[Sequence[Finding]], None]


@dataclass
class Outcome:
    failed: list[Item] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    objects: int = 0
    rows: int = 0
    untrusted: int = 0
    published: bool = False


def _scan_item(item: Item, objects: ObjectSource, allowlist: Allowlist) -> list[ObjectResult]:
    results = []
    for ref in item.refs:
        with closing(objects.open(ref)) as stream:
            results.append(scan_object(stream, ref.uri, allowlist, key=ref.key))
    return results


def process(
    batch: Batch, allowlists: AllowlistSource, objects: ObjectSource, alert: Alert
) -> Outcome:
    """Scan every announced object, aggregate, alert; report which items failed and why."""
    out = Outcome()
    for item in batch.items:
        out.skipped.extend(item.skipped)
    try:
        allowlist = allowlists.get()
    except (AllowlistUnavailable, AllowlistInvalid) as exc:
        # Judging against no allowlist would alert on everyone: fail and retry instead.
        out.failed = list(batch.items)
        out.errors.append(str(exc))
        return out
    run = Run(allowlist)
    done: list[Item] = []
    for item in batch.items:
        if item.error is not None:
            out.failed.append(item)
            out.errors.append(item.error)
            continue
        try:
            results = _scan_item(item, objects, allowlist)
        except (BadObject, ObjectUnreadable) as exc:
            out.failed.append(item)
            out.errors.append(str(exc))
            continue
        for result in results:
            run.add(result)
        done.append(item)
    out.objects, out.rows = run.objects, run.rows
    out.untrusted = run.matched - run.trusted
    out.findings = run.findings()
    if out.findings:
        try:
            alert(out.findings)
            out.published = True
        except PublishFailed as exc:
            # Nothing was (fully) delivered: every item read in this run is retried, so the
            # alert comes later rather than never.
            out.failed.extend(done)
            out.errors.append(str(exc))
    return out
