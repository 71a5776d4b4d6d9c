"""moto's DynamoDB (and Security Hub) made safe for concurrent requests, as AWS is.

moto's DynamoDB backend is not thread-safe: a transaction deep-copies the table while another
thread writes to it ("dictionary changed size during iteration"), and a conditional write checks
then writes without a lock (two threads can pass the same version check). Real DynamoDB
serialises both. The detector sends state-table calls for different alert keys in parallel, so
every test, the demo and the benchmark's moto server run with one lock around each DynamoDB
request: the guarantee the code relies on, restored in the emulator. Security Hub batches
are imported in parallel too, and moto's Security Hub keeps findings in plain lists and
dicts, so its import and read go under the same lock.
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.RLock()
_METHODS = (
    "put_item",
    "get_item",
    "update_item",
    "delete_item",
    "transact_write_items",
    "transact_get_items",
    "batch_get_item",
    "batch_write_item",
    "query",
    "scan",
    "create_table",
    "delete_table",
    "describe_table",
)


_HUB_METHODS = ("batch_import_findings", "get_findings")


def serialize_dynamodb() -> None:
    """Wrap moto's DynamoDB and Security Hub backend methods in one lock (idempotent)."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.securityhub.models import SecurityHubBackend

    for backend, methods in ((DynamoDBBackend, _METHODS), (SecurityHubBackend, _HUB_METHODS)):
        if getattr(backend, "_serialized_by_tests", False):
            continue
        for name in methods:
            original = getattr(backend, name, None)
            if original is None:
                continue

            def locked(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
                with _LOCK:
                    return __original(self, *args, **kwargs)

            setattr(backend, name, locked)
        backend._serialized_by_tests = True  # type: ignore[attr-defined]
