"""Scanning one item of an invocation (an SQS record, or the whole direct event): each of its
objects claimed in the state table, read and scanned, in a worker thread. What it gave, or the
error that fails it (and the claims it released), for ``detector.app.pipeline`` to merge.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from detector.analysis.engine import ObjectResult, scan_object
from detector.app.ports import ObjectSource, StateStore
from detector.core.allowlist import Allowlist
from detector.core.errors import DetectorError, ObjectUnreadable
from detector.core.objects import ObjectRef
from detector.core.spec import Active
from detector.lake.notifications import Item


class Busy(DetectorError):
    """Another invocation holds the object right now; this one retries it later."""


@dataclass
class _Done:
    """What scanning one item gave: its objects' results, or the error that failed it."""

    item: Item
    claims: list[ObjectRef] = field(default_factory=list)
    results: list[tuple[ObjectRef, ObjectResult]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    error: str | None = None


def _scan_item(
    item: Item,
    objects: ObjectSource,
    allowlist: Allowlist,
    state: StateStore | None,
    active: Sequence[Active] | None = None,
) -> _Done:
    """Scan every object of one item. Runs in a worker thread: it shares nothing but the
    (thread-safe) adapters, and reports through what it returns."""
    done = _Done(item)
    current = item.refs[0].uri if item.refs else "(no object)"
    try:
        for ref in item.refs:
            current = ref.uri
            stream: IO[bytes] | None = None
            try:
                if state is not None and ref.bucket is not None and not ref.etag:
                    # No ETag announced: learn it from the object's first GET before claiming,
                    # so a re-announcement with or without one names the same object and the
                    # object counts once.
                    stream = objects.open(ref)
                    ref = dataclasses.replace(ref, etag=getattr(stream, "etag", None))
                if state is not None:
                    claim = state.claim_object(ref)
                    if claim == "done":
                        done.duplicates.append(ref.uri)
                        continue
                    if claim == "busy":
                        raise Busy(f"{ref.uri}: being processed by another invocation")
                    done.claims.append(ref)
                if stream is None:
                    stream = objects.open(ref)
                result = scan_object(stream, ref.uri, allowlist, key=ref.key, active=active)
            except ObjectUnreadable as exc:
                if exc.code not in ("NoSuchKey", "NoSuchVersion"):
                    raise
                # Removed before it was read (e.g. lifecycle): retrying cannot bring it back.
                done.missing.append(str(exc))
                continue
            finally:
                if stream is not None:
                    stream.close()
            done.results.append((ref, result))
    except Exception as exc:
        # Whatever went wrong (a bug included), this item alone fails and is retried, and it
        # leaves no claim behind to make its retry wait for the lease to run out.
        if state is not None:
            with contextlib.suppress(Exception):
                state.release_objects(done.claims)
        done.error = _describe(exc, current)
    return done


def _describe(exc: BaseException, what: str) -> str:
    if isinstance(exc, DetectorError):
        return str(exc)
    return f"{what}: unexpected {type(exc).__name__}: {str(exc)[:300]}"
