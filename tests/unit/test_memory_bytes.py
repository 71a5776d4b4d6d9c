"""Memory follows request size, not rows ("Trust under attack, round two", item A).

MEMORY-BOUND TESTS. The first three scan ~90 MB objects whose requests are ~95 KB each (see
``tests.large_requests``) in a child process of their own and assert its peak RSS (``VmHWM``):
bounds on memory, not on time, so a busy machine makes them slower, never failing. Before
batches were cut by bytes the scans below peaked at 1,060 MB (manifests), 1,002 MB (stacks) and
4,174 MB (four at once); now at about 270, 260 and 670 MB (benchmarks/README.md).

The last tests check, in this process and on small objects, that cutting batches by bytes,
streaming and reading one large row group at a time change nothing found.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detector.analysis.engine import scan_object
from detector.core.allowlist import Allowlist
from detector.lake import reader
from tests import lake, large_requests
from tests.unit.helpers import canonical

ROOT = Path(__file__).resolve().parents[2]
# The goal for one scan of the 3,000 x 95 KB object.
SCAN_GOAL_MB = 350
# The Lambda's memory (template.yaml), scanning up to 4 objects at once (pipeline.py); the
# bound keeps 224 MB of it spare.
FOUR_AT_ONCE_MB = 800

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)"
)


def child(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tests.large_requests", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The large objects, each built in a child (building one holds ~1 GB)."""
    where = tmp_path_factory.mktemp("large")
    paths = {
        "manifest": where / "manifest.parquet",
        "manifest-pyarrow-pages": where / "manifest-pyarrow-pages.parquet",
        "stack": where / "stack.parquet",
    }
    child("build", "manifest", "2", str(large_requests.PAGE_CHECK_ROWS), str(paths["manifest"]))
    child("build", "manifest", "2", "default", str(paths["manifest-pyarrow-pages"]))
    child("build", "stack", "2", str(large_requests.PAGE_CHECK_ROWS), str(paths["stack"]))
    yield paths


def scanned(path: Path, parallel: int = 1) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(child("scan", str(path), str(parallel)))
    return result


def test_memory_bound_3000_pushes_with_95_kb_manifests(objects: dict[str, Path]):
    result = scanned(objects["manifest"])
    # Every call is reported: 3,000 failed pushes (one finding per user agent) and the push.
    assert (result["findings"], result["calls"]) == (3001, 3001)
    assert result["peak_mb"] < SCAN_GOAL_MB, result


def test_memory_bound_3000_large_create_stacks_beside_one_push(objects: dict[str, Path]):
    result = scanned(objects["stack"])
    assert (result["findings"], result["calls"]) == (1, 1)
    assert result["peak_mb"] < SCAN_GOAL_MB, result


def test_memory_bound_four_scans_at_once_with_pyarrow_s_115_mb_pages(objects: dict[str, Path]):
    # The worst pages a writer makes here (see tests.large_requests): however batches are cut,
    # pyarrow holds ~350 MB of pages for this column chunk; four objects at once would hold
    # them four times over, past the Lambda's memory, unless such row groups take turns.
    result = scanned(objects["manifest-pyarrow-pages"], parallel=4)
    assert (result["findings"], result["calls"]) == (3001, 4 * 3001)
    assert result["peak_mb"] < FOUR_AT_ONCE_MB, result


# --- the same findings, however batches are cut -------------------------------------------------

CI = Allowlist.parse(lake.CI_ROLE)


def small_flood(version: int, kind: str, v1_request: str = "flattened") -> bytes:
    """60 large calls and a few ordinary ones (trusted and not), in row groups of 25 rows."""
    big = large_requests.BUILDERS[kind](60)
    ordinary = [
        lake.event(time_ms=lake.T0_MS + 100 + i, event_uid=f"evt-o{i}")  # the CI role
        if i % 2
        else lake.event(
            arn=f"arn:aws:iam::{lake.ACCOUNT}:user/dev{i % 3}",
            session_issuer=None,
            time_ms=lake.T0_MS + 100 + i,
            event_uid=f"evt-o{i}",
            request_json=lake.put_image_request(f"repo{i % 4}", f"tag{i}"),
        )
        for i in range(20)
    ]
    events = [e for pair in zip(big[:20], ordinary, strict=True) for e in pair] + big[20:]
    buf = io.BytesIO()
    lake.write_object(buf, events, version, row_group_size=25, v1_request=v1_request)
    return buf.getvalue()


def findings(data: bytes) -> list[str]:
    return canonical(scan_object(io.BytesIO(data), "x.gz.parquet", CI).findings())


@pytest.mark.parametrize(
    ("version", "kind", "v1_request"),
    [
        (2, "manifest", "flattened"),
        (2, "stack", "flattened"),
        (1, "manifest", "flattened"),
        (1, "manifest", "json"),
        (1, "stack", "json"),
    ],
)
def test_batches_cut_by_bytes_find_the_same(
    version: int, kind: str, v1_request: str, monkeypatch: pytest.MonkeyPatch
):
    data = small_flood(version, kind, v1_request)
    # As before: 64K-row batches, pre-buffered, no row group waiting for another.
    monkeypatch.setattr(reader, "BATCH_BYTES", 1 << 40)
    monkeypatch.setattr(reader, "PREBUFFER_BYTES", 1 << 40)
    monkeypatch.setattr(reader, "LARGE_ROW_BYTES", 1 << 40)
    before = findings(data)
    assert before
    # Batches of a few rows, every pass streamed, every row group read under the lock.
    monkeypatch.setattr(reader, "BATCH_BYTES", 200_000)
    monkeypatch.setattr(reader, "MIN_BATCH_ROWS", 1)
    monkeypatch.setattr(reader, "PREBUFFER_BYTES", 0)
    monkeypatch.setattr(reader, "LARGE_ROW_BYTES", 0)
    assert findings(data) == before


def test_batch_rows_follow_the_bytes_of_the_columns_read():
    data = small_flood(2, "manifest")
    f = io.BytesIO(data)
    r = reader.ObjectReader(f, "x.gz.parquet", CI)
    group = 0
    per_row, _ = r._pass_bytes(group, r._detail_leaves)
    assert per_row > 20_000  # 25 rows, about half of them with 95 KB requests
    light, _ = r._pass_bytes(group, r._predicate_leaves)  # caller identities only
    assert light < 1000
