"""Security Lake objects whose request column is large, for the memory tests and the bench.

The caller of an API call sizes its request: a ``PutImage`` carries the whole image manifest
(``imageManifest``), a ``CreateStack`` its template. Objects are nested by ``tests.lake`` (the
real layout of either OCSF version), gzip as Security Lake writes, one row group:

- ``manifest_flood``: 3,000 failed ``PutImage`` calls by one unknown caller, each with a
  ~95 KB manifest (unique layer digests, so it compresses about as a real one does: ~4:1),
  and one successful push by another unknown caller: every row is reported.
- ``stack_flood``: 3,000 ``CreateStack`` calls with ~95 KB templates beside one push by an
  unknown caller: one row is reported, in the row group of the large requests.

Pages: pyarrow checks a page's size only every ``write_batch_size`` rows (1,024 by default),
so with 95 KB values it writes 1,024-row pages of ~115 MB, and a first dictionary page as
large; parquet-mr (the Java writer of Iceberg and Hive tables) checks every 100 rows at least
and stops dictionary-encoding at 1 MB, so its pages hold ~10 MB here. A reader holds at least
one page decompressed (pyarrow also the dictionary page, for the whole column chunk): pages
are the writer's choice, not the reader's. ``PAGE_CHECK_ROWS`` writes pages as parquet-mr
sizes them; ``page_check_rows=None`` writes pyarrow's default pages.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow.parquet as pq

from tests import lake

FLOOD_CALLS = 3000
REQUEST_BYTES = 95_000
PAGE_CHECK_ROWS = 100
ATTACKER = f"arn:aws:iam::{lake.ACCOUNT}:user/flooder"
SECOND = f"arn:aws:iam::{lake.ACCOUNT}:user/second"


def big_document(i: int, size: int = REQUEST_BYTES) -> str:
    """An image manifest of about ``size`` bytes: layers with unique (random) digests."""
    layers = max(1, size // 150)  # about 150 bytes of JSON per layer
    digests = random.Random(i).randbytes(32 * layers).hex()
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 30_000 + j,
                    "digest": "sha256:" + digests[64 * j : 64 * j + 64],
                }
                for j in range(layers)
            ],
        }
    )


def manifest_flood_events(n: int = FLOOD_CALLS) -> list[dict[str, Any]]:
    events = [
        lake.event(
            arn=ATTACKER,
            session_issuer=None,
            status="Failure",
            error_code="AccessDenied",
            user_agent=f"flood-agent/{i}",
            time_ms=lake.T0_MS + i,
            event_uid=f"evt-flood-{i:06d}",
            request_json=json.dumps(
                {
                    "repositoryName": "app",
                    "registryId": lake.ACCOUNT,
                    "imageTag": f"t{i}",
                    "imageManifest": big_document(i),
                }
            ),
        )
        for i in range(n)
    ]
    events.append(
        lake.event(arn=SECOND, session_issuer=None, time_ms=lake.T0_MS + n, event_uid="evt-push")
    )
    return events


def stack_flood_events(n: int = FLOOD_CALLS) -> list[dict[str, Any]]:
    events = [
        lake.event(
            operation="CreateStack",
            service="cloudformation.amazonaws.com",
            time_ms=lake.T0_MS + i,
            event_uid=f"evt-stack-{i:06d}",
            request_json=json.dumps({"stackName": f"stack-{i}", "templateBody": big_document(i)}),
        )
        for i in range(n)
    ]
    push = lake.event(arn=SECOND, session_issuer=None, time_ms=lake.T0_MS + n, event_uid="evt-push")
    events.insert(n // 2, push)
    return events


def write(
    where: str | Path | BinaryIO,
    events: list[dict[str, Any]],
    version: int = 2,
    page_check_rows: int | None = PAGE_CHECK_ROWS,
) -> None:
    """``events`` as one Security Lake object (``tests.lake.nest``), gzip, one row group."""
    table = lake.nest(lake.columns_from_events(events), version)
    pq.write_table(
        table,
        where,
        compression="gzip",
        compression_level=1,  # fast to build; larger pages to read than level 6 makes
        write_batch_size=page_check_rows,
    )


def manifest_flood(version: int = 2, page_check_rows: int | None = PAGE_CHECK_ROWS) -> bytes:
    buf = io.BytesIO()
    write(buf, manifest_flood_events(), version, page_check_rows)
    return buf.getvalue()


def stack_flood(version: int = 2, page_check_rows: int | None = PAGE_CHECK_ROWS) -> bytes:
    buf = io.BytesIO()
    write(buf, stack_flood_events(), version, page_check_rows)
    return buf.getvalue()


BUILDERS = {"manifest": manifest_flood_events, "stack": stack_flood_events}


def peak_rss_mb() -> float:
    """This process's peak RSS (Linux ``VmHWM``). Not ``ru_maxrss``: a child's starts at its
    parent's peak (Linux carries it over fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def scan(path: str, parallel: int = 1) -> dict[str, Any]:
    """Scan ``path`` ``parallel`` times at once (threads, as the Lambda scans up to 4 objects),
    allowlist = the CI role: peak RSS and what was found."""
    from concurrent.futures import ThreadPoolExecutor

    from detector.analysis.engine import ObjectResult, Run, scan_object
    from detector.core.allowlist import Allowlist

    allowlist = Allowlist.parse(lake.CI_ROLE)

    def one(_: int) -> ObjectResult:
        with open(path, "rb") as f:
            return scan_object(f, "big.gz.parquet", allowlist)

    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(one, range(parallel)))
    run = Run(allowlist)
    for result in results:
        run.add(result)
    findings = run.findings()
    records = sorted(json.dumps(f.to_record(), sort_keys=True) for f in findings)
    return {
        "peak_mb": peak_rss_mb(),
        "findings": len(findings),
        "calls": sum(f.count for f in findings),
        "digest": hashlib.sha256("\n".join(records).encode()).hexdigest()[:16],
    }


def main(argv: list[str]) -> None:
    """``python -m tests.large_requests build KIND VERSION PAGE_CHECK_ROWS|default PATH``:
    write one object (in a process of its own: building holds ~1 GB);
    ``python -m tests.large_requests scan PATH [PARALLEL]``: one JSON line (``scan``)."""
    if argv[0] == "build":
        kind, version, rows, path = argv[1:]
        write(path, BUILDERS[kind](), int(version), None if rows == "default" else int(rows))
    else:
        print(json.dumps(scan(argv[1], int(argv[2]) if len(argv) > 2 else 1)))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
