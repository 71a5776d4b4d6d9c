"""Fuzz: no byte mutation of a lake object can kill the process.

Objects of both source versions and the four compressions the reader handles are built once,
then mutated (fixed seed) in the footer, the page headers and the data: bit flips, byte sets,
multi-byte sets, splices, insertions, deletions, truncations, and whole Thrift fields of the
footer set to edge values. Two long-lived child processes (``tests/fuzz_child.py``) scan them
and report one line per mutation, because an abort or a segfault inside pyarrow cannot be
caught in this process. Every mutation must come back either scanned or named by ``BadObject``
(one line, naming the object); none may kill the child, hang, let another exception escape
or allocate absurd memory.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests import lake
from tests.fuzz_child import binary, footer_bounds, footer_spans, varint
from tests.unit.helpers import parquet_bytes

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261120
VERSIONS = (1, 2)
COMPRESSIONS = ("gzip", "snappy", "zstd", "none")  # every codec the reader must read
PER_FIXTURE = 300  # x 8 fixtures = 2,400 mutations
CHILDREN = 2
CHILD_TIMEOUT_S = 600  # a hung child is killed and its mutation named; not a speed limit
PEAK_RSS_MB = 1024  # these objects are < 100 KB: anything near this is a runaway allocation
OUTCOMES = ("scanned", "named")
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF)
INTERESTING_INTS = (0, 1, -1, 2, 7, 8, 2**31 - 1, -(2**31), 2**40, -(2**40), 2**62)


@dataclass
class Fixture:
    name: str
    data: bytes
    footer_start: int
    page_starts: list[int]  # first byte of each column chunk: its first page header
    spans: dict[tuple[int, ...], tuple[int, int, int]]  # footer values (tests.fuzz_child)
    row_groups: int
    columns: int
    operation: int  # leaf index of api.operation: the column the reader inspects first


def fixture_events() -> list[dict[str, Any]]:
    """Untrusted pushes, trusted CI pushes and other calls, so every reader pass runs."""
    events = []
    for i in range(48):
        at = lake.T0_MS + i * 1000
        if i % 4 == 0:
            events.append(lake.event(time_ms=at, operation="GetAuthorizationToken"))
        elif i % 4 == 1:
            events.append(lake.event(time_ms=at))  # the CI role: trusted
        else:
            events.append(
                lake.event(
                    time_ms=at,
                    arn=f"arn:aws:iam::{lake.ACCOUNT}:user/dev{i % 3}",
                    session_issuer=None,
                    request_json=lake.put_image_request(f"repo{i % 2}", f"t{i}"),
                )
            )
    return events


def build_fixtures(directory: Path) -> list[Fixture]:
    fixtures = []
    events = fixture_events()
    for version in VERSIONS:
        for compression in COMPRESSIONS:
            data = parquet_bytes(events, version, compression=compression, row_group_size=12)
            meta = pq.read_metadata(pa.BufferReader(data))
            starts = []
            for r in range(meta.num_row_groups):
                for j in range(meta.num_columns):
                    col = meta.row_group(r).column(j)
                    starts.append(col.data_page_offset)
                    if col.has_dictionary_page:
                        starts.append(col.dictionary_page_offset)
            name = f"v{version}-{compression}.parquet"
            (directory / name).write_bytes(data)
            paths = [meta.schema.column(j).path for j in range(meta.num_columns)]
            fixtures.append(
                Fixture(
                    name=name,
                    data=data,
                    footer_start=footer_bounds(data)[0],
                    page_starts=sorted(starts),
                    spans=footer_spans(data),
                    row_groups=meta.num_row_groups,
                    columns=meta.num_columns,
                    operation=paths.index("api.operation"),
                )
            )
    return fixtures


# Footer fields aimed at (Thrift field ids): ColumnMetaData type, num_values, total sizes, page
# offsets; its Statistics max_value/min_value; SizeStatistics histograms; RowGroup num_rows.
META_INTS = (1, 5, 6, 7, 9, 11)


def footer_field(fx: Fixture, rng: random.Random) -> list[Any]:
    """One footer value of one column chunk (half the time api.operation's) set to an edge."""
    r = rng.randrange(fx.row_groups)
    j = fx.operation if rng.random() < 0.5 else rng.randrange(fx.columns)
    meta = (4, r, 1, j, 3)
    what = rng.choices(["int", "histogram", "statistic", "rows", "any"], [45, 20, 15, 10, 10])[0]
    candidates = {
        "int": [(*meta, f) for f in META_INTS],
        "histogram": [(*meta, 16, 2), (*meta, 16, 3)],
        "statistic": [(*meta, 12, 5), (*meta, 12, 6)],
        "rows": [(4, r, 3)],
        "any": [p for p, s in fx.spans.items() if p[:2] == (4, r) and s[2] in (4, 5, 6)],
    }[what]
    present = [p for p in candidates if p in fx.spans] or [(4, r, 3)]
    path = rng.choice(present)
    kind = fx.spans[path][2]
    if kind == 9:  # a level histogram: a list of n i64 zeros instead
        n = rng.randrange(0, 6)
        value = bytes([n << 4 | 6]) + bytes(n)
    elif kind == 8:  # min or max: another string
        value = binary(rng.choice([b"", b"A", b"PutImage", b"\xff\xfe", b"Z" * 300]))
    elif path[-1] == 1 and rng.random() < 0.7:  # a physical type: another one, or none
        value = varint(rng.choice([0, 1, 2, 3, 4, 5, 7, 8, -1]))
    else:
        value = varint(rng.choice([*INTERESTING_INTS, rng.randrange(-9, 64)]))
    return ["footer", list(path), value.hex()]


def mutation(fx: Fixture, rng: random.Random) -> tuple[str, list[Any]]:
    """(region, ops) of one random mutation of ``fx`` (see ``tests.fuzz_child.apply``)."""
    d, size = fx.data, len(fx.data)
    region = rng.choices(
        ["footer-field", "footer", "trailer", "page-header", "data"], [25, 25, 5, 25, 20]
    )[0]
    if region == "footer-field":
        return region, [footer_field(fx, rng)]
    if region == "footer":
        lo, hi = fx.footer_start, size - 8
    elif region == "trailer":
        lo, hi = size - 8, size
    elif region == "page-header":
        lo = rng.choice(fx.page_starts)
        hi = min(lo + 24, fx.footer_start)
    else:
        lo, hi = 4, fx.footer_start
    at = rng.randrange(lo, hi)
    kind = rng.choice(["flip", "set", "set-run", "splice", "insert", "delete", "cut"])
    if kind == "flip":
        ops = [["set", at, d[at] ^ (1 << rng.randrange(8))]]
    elif kind == "set":
        ops = [["set", at, rng.choice([*INTERESTING_BYTES, rng.randrange(256)])]]
    elif kind == "set-run":
        value = rng.choice(INTERESTING_BYTES)
        ops = [["set", k, value] for k in range(at, min(at + rng.randrange(2, 9), size))]
    elif kind == "splice":
        ops = [["splice", at, rng.randrange(0, size - 64), rng.randrange(1, 64)]]
    elif kind == "insert":
        ops = [["insert", at, [rng.randrange(256) for _ in range(rng.randrange(1, 9))]]]
    elif kind == "delete":
        ops = [["delete", at, rng.randrange(1, 17)]]
    else:
        ops = [[rng.choice(["cut", "cut_keep_tail"]), at]]
    return f"{region}/{kind}", ops


def all_mutations(fixtures: list[Fixture]) -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    out: list[dict[str, Any]] = []
    for fx in fixtures:
        # The unmutated object first: it must scan, with findings, or nothing else means much.
        out.append({"id": len(out), "fixture": fx.name, "region": "none", "ops": []})
        for _ in range(PER_FIXTURE):
            region, ops = mutation(fx, rng)
            out.append({"id": len(out), "fixture": fx.name, "region": region, "ops": ops})
    return out


def describe_exit(code: int | None) -> str:
    if code is None:
        return f"no answer within {CHILD_TIMEOUT_S} s (killed)"
    if code < 0:
        known = -code in {s.value for s in signal.Signals}
        return f"killed by {signal.Signals(-code).name if known else f'signal {-code}'}"
    return f"exit status {code}"


def run_child(
    fixture_dir: Path, muts: list[dict[str, Any]], work: Path, tag: str
) -> tuple[int | None, dict[int, dict[str, Any]]]:
    """Scan ``muts`` in one child process: its exit status (None: timed out) and reports."""
    todo, results = work / f"{tag}.in.jsonl", work / f"{tag}.out.jsonl"
    todo.write_text("".join(json.dumps(m) + "\n" for m in muts))
    results.write_text("")
    argv = [sys.executable, "-m", "tests.fuzz_child", str(fixture_dir), str(todo), str(results)]
    try:
        proc = subprocess.run(
            argv, cwd=ROOT, capture_output=True, timeout=CHILD_TIMEOUT_S, check=False
        )
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        code = None
    reports = {}
    for line in results.read_text().splitlines():
        report = json.loads(line)
        reports[report["id"]] = report
    return code, reports


def run_chunk(
    fixture_dir: Path, chunk: list[dict[str, Any]], work: Path, tag: str
) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """Reports of every mutation of ``chunk``, and a sentence for each one that killed a child.

    When a child dies, the first mutation it did not report is run again alone in a fresh
    process: that names the exact mutation (or says it kills only after the ones before it).
    The rest of the chunk goes on in a new child.
    """
    reports: dict[int, dict[str, Any]] = {}
    deaths: list[str] = []
    pending = chunk
    round_ = 0
    while pending:
        code, got = run_child(fixture_dir, pending, work, f"{tag}-{round_}")
        reports.update(got)
        if code == 0 and len(got) == len(pending):
            break
        k = next(i for i, m in enumerate(pending) if m["id"] not in got)
        suspect = pending[k]
        alone_code, alone = run_child(fixture_dir, [suspect], work, f"{tag}-{round_}-alone")
        if alone:
            deaths.append(
                f"child {describe_exit(code)} at mutation {json.dumps(suspect)}, which alone "
                f"is {alone[suspect['id']]['outcome']}: it kills only after the "
                f"{k} mutations before it in the same process"
            )
        else:
            deaths.append(f"{describe_exit(alone_code)}: mutation {json.dumps(suspect)}")
        pending = pending[k + 1 :]
        round_ += 1
    return reports, deaths


def run_fuzz(work: Path) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]], list[str]]:
    """Build the fixtures, mutate them and scan every mutation in ``CHILDREN`` processes."""
    fixture_dir = work / "fixtures"
    fixture_dir.mkdir()
    muts = all_mutations(build_fixtures(fixture_dir))
    chunks = [muts[i::CHILDREN] for i in range(CHILDREN)]
    reports: dict[int, dict[str, Any]] = {}
    deaths: list[str] = []
    with ThreadPoolExecutor(CHILDREN) as pool:
        for got, died in pool.map(
            lambda ic: run_chunk(fixture_dir, ic[1], work, f"child{ic[0]}"), enumerate(chunks)
        ):
            reports.update(got)
            deaths.extend(died)
    return muts, reports, deaths


def test_no_mutation_kills_the_process(tmp_path: Path) -> None:
    muts, reports, deaths = run_fuzz(tmp_path)

    assert deaths == []
    assert len(muts) >= 2000 + len(VERSIONS) * len(COMPRESSIONS)
    missing = [m for m in muts if m["id"] not in reports]
    assert missing == []
    outcomes = Counter(r["outcome"] for r in reports.values())
    # Nothing but BadObject escapes, and each message is one line naming the object.
    escaped = [(muts[i], r) for i, r in reports.items() if r["outcome"] not in OUTCOMES]
    assert escaped == []
    # The unmutated objects scan with findings: the reader and the fixtures are sound.
    controls = [reports[m["id"]] for m in muts if m["region"] == "none"]
    assert all(r["outcome"] == "scanned" and r["findings"] > 0 for r in controls), controls
    # The mutations bite: many objects are refused, and many still scan.
    assert outcomes["named"] >= len(muts) // 5 and outcomes["scanned"] >= len(muts) // 10
    runaway = [
        (muts[i], r)
        for i, r in reports.items()
        if r["peak_rss_mb"] > PEAK_RSS_MB
        or any(w in r.get("reason", "") for w in ("MemoryError", "malloc", "Out of memory"))
    ]
    assert runaway == []
    # Every fixture (both versions, the four codecs) and every kind of mutation was tried.
    kinds = {m["region"].split("/")[1] for m in muts if "/" in m["region"]}
    assert kinds == {"flip", "set", "set-run", "splice", "insert", "delete", "cut"}
    tried = Counter((m["fixture"], m["region"].split("/")[0]) for m in muts)
    assert len({f for f, _ in tried}) == len(VERSIONS) * len(COMPRESSIONS)
    assert {r for _, r in tried} == {
        "none",
        "footer-field",
        "footer",
        "trailer",
        "page-header",
        "data",
    }
