"""Benchmark: our object scan against DuckDB, a naive pyarrow read and pandas on one object.

What is compared: the time and peak memory to answer the detection's question over one
Security Lake-shaped CloudTrail object (OCSF v2, ~4M rows, gzip, ~128 MB): which PutImage calls
were made by principals not on the allowlist, grouped like the Splunk search (operation, user,
account, user agent, source IP, source domain, region) with count, first and last time.

Contenders, each in its own fresh Python subprocess, so that wall time includes interpreter
start and imports and peak RSS (``ru_maxrss`` of that child, from ``os.wait4``) is its own:

- ``scan``: ``detector.analysis.engine.scan_object`` + ``Run.findings()`` + ``to_record()`` (also
  extracts repositories, tags, ids, sample sets: more output than the others);
- ``scan-both-default`` / ``scan-both``: the same read with both ECR detections enabled
  (issue 12: at most 10 % more than ``scan``), the second with its default hours (it reports
  nothing in this object) and with business hours from 10:30 (it reports about half of the
  pushes, ~5,200 findings of its own); compared with the others on the first detection's
  findings;
- ``duckdb``: the same filter and grouping in SQL, ``SET threads=1``;
- ``duckdb+repos``: as ``duckdb`` plus the distinct repository names from the request JSON,
  like the scan's ``repositories`` (so the output being compared is closer to equal);
- ``pyarrow-full``: ``pq.read_table`` of every column (default threads), filter and group in
  Arrow: the "read everything" baseline;
- ``pandas-full``: ``pd.read_parquet`` of every column, filter and group in pandas (killed,
  and reported as such, past ``--timeout`` or ``--mem-cap-gb``);
- ``scan-alt`` (with ``--alt DIR``): the scan from another checkout of ``detector/``, to A/B
  a change to the reader.

Every contender's result is reduced to (groups, total count, digest of the sorted group rows)
and checked for agreement with the scan. Contenders other than pandas run with pandas hidden,
as deployed (see ``hide_pandas``). The test object is generated once with
``tests.lake.synthetic_columns`` + ``tests.lake.nest(…, 2)`` and cached under ``.bench/``
(named by its parameters; objects of other parameters are removed unless ``--keep``).

A second section scans objects of large requests (``large_objects.py``: 3,000 calls of ~95 KB
each) with ``scan`` (and ``scan-alt``), reporting peak RSS (``--no-large`` skips it).

A third section runs the Lambda path (``lambda_bench.py``): ``detector.handler.lambda_handler``
against moto's server with this object and 200 small ones, reporting bytes and GET requests
fetched from S3, wall time, peak RSS and an estimated Lambda cost (``--no-lambda`` skips it,
``--lambda-only`` runs only it).

Usage: ``PYTHONPATH=. python benchmarks/bench.py [--rows N] [--keep] [--repeat 3]
[--only scan,duckdb] [--alt DIR] [--profile] [--no-large] [--no-lambda | --lambda-only]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

T_START = time.perf_counter()  # as early as possible: children report import cost from here

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench"
if str(ROOT) not in sys.path:  # ``benchmarks.*`` importable however the script is started
    sys.path.insert(0, str(ROOT))

PUT_IMAGE_FRACTION = 0.005
CHUNK_ROWS = 1024 * 1024  # = pyarrow's default row group size; written as one row group each
PIECE_ROWS = 256 * 1024  # rows per synthetic_columns call (different seed each)
COMPRESSION = "gzip"  # what Security Lake objects use (``*.gz.parquet``)
BASE_SEED = 1000
ALLOWLIST_TEXT = "arn:aws:iam::111122223333:role/ci-deployer\n"
TRUSTED = ("arn:aws:iam::111122223333:role/ci-deployer",)
TARGET = "PutImage"

# Goals the scan is held to.
GOAL_RSS_MB = 256.0

KEY_PATHS = (
    "api.operation",
    "actor.user.uid",
    "actor.user.account.uid",
    "http_request.user_agent",
    "src_endpoint.ip",
    "src_endpoint.domain",
    "cloud.region",
)
TRUST_PATHS = ("actor.user.uid", "actor.session.issuer", "actor.invoked_by")

Row = tuple[Any, ...]  # the group's key values, then count, min time ms, max time ms


# --------------------------------------------------------------------------------------------
# Test object
# --------------------------------------------------------------------------------------------


def object_path(rows: int) -> Path:
    """The cached object for ``rows``; every generation parameter is in the name."""
    frac = f"{PUT_IMAGE_FRACTION:g}".replace(".", "p")
    return CACHE / (
        f"v2r3-{rows}rows-put{frac}-{COMPRESSION}-rg{CHUNK_ROWS}-c{PIECE_ROWS}-s{BASE_SEED}.parquet"
    )


def generate(path: Path, rows: int) -> None:
    """Write the object one row group at a time so memory stays bounded (~2 GB).

    A row group is built from pieces of ``PIECE_ROWS``: ``synthetic_columns`` materialises a
    full-size PutImage request for every row before choosing, which overflows a 2 GiB string
    array at 1Mi rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.lake import nest, synthetic_columns

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    writer: pq.ParquetWriter | None = None
    t0 = time.perf_counter()
    try:
        for group_start in range(0, rows, CHUNK_ROWS):
            pieces = []
            for start in range(group_start, min(group_start + CHUNK_ROWS, rows), PIECE_ROWS):
                n = min(PIECE_ROWS, rows - start)
                cols = synthetic_columns(
                    n, PUT_IMAGE_FRACTION, seed=BASE_SEED + start // PIECE_ROWS, uid_start=start
                )
                pieces.append(nest(cols, 2))
                del cols
            table = pa.concat_tables(pieces)
            del pieces
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression=COMPRESSION)
            writer.write_table(table)  # one row group: CHUNK_ROWS is pyarrow's default maximum
            done = group_start + table.num_rows
            del table
            print(
                f"  generated {done:,}/{rows:,} rows ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(path)


def prune_cache(keep: Path) -> None:
    """Remove cached objects of other sizes or parameters."""
    for other in CACHE.glob("*.parquet*"):
        if other != keep:
            print(f"  removing stale {other.name} (use --keep to keep it)")
            other.unlink()


def describe(path: Path) -> dict[str, int]:
    """Size, rows and row groups of the object (run in a child: the parent never imports
    pyarrow, see ``run_child``)."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    return {
        "bytes": path.stat().st_size,
        "rows": md.num_rows,
        "row_groups": md.num_row_groups,
        "columns": md.num_columns,
    }


def warm_page_cache(path: Path) -> None:
    """Read the file once so every contender starts with it in the page cache."""
    with path.open("rb") as f:
        while f.read(1 << 24):
            pass


# --------------------------------------------------------------------------------------------
# Results, shared by all contenders
# --------------------------------------------------------------------------------------------


def _plain(v: Any) -> Any:
    """None for NaN/NA, Python int for numpy ints: one representation for every contender."""
    if v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    if type(v).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(v, "item") and not isinstance(v, str):
        return v.item()
    return v


def digest(rows: Iterable[Sequence[Any]]) -> str:
    lines = sorted(json.dumps([_plain(v) for v in r]) for r in rows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def summary(rows: list[Row], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {
        "groups": len(rows),
        "total": sum(int(r[len(KEY_PATHS)]) for r in rows),
        "digest": digest(rows),
    }
    return out | (extra or {})


# --------------------------------------------------------------------------------------------
# Contenders (run inside the child process; each imports only what it needs)
# --------------------------------------------------------------------------------------------


def run_scan(
    path: Path, slugs: Sequence[str] = (), options: dict[str, str] | None = None
) -> dict[str, Any]:
    from detector.analysis.engine import Run, scan_object
    from detector.core.allowlist import Allowlist

    t0 = time.perf_counter()
    allowlist = Allowlist.parse(ALLOWLIST_TEXT)
    import inspect

    if "active" not in inspect.signature(scan_object).parameters:
        # scan-alt on a checkout from before detection specs
        run = Run(allowlist)
        with path.open("rb") as f:
            run.add(scan_object(f, path.name, allowlist))
        every = findings = run.findings()
        note = ""
    else:
        from detector import detections

        active = detections.activate(slugs or [detections.DEFAULT], options)
        run = Run(allowlist, active)
        with path.open("rb") as f:
            run.add(scan_object(f, path.name, allowlist, active=active), adopt=True)
        every = run.findings()
        # Compared with the other contenders: the default detection's findings (they answer
        # its question only); the others' are counted in the note.
        findings = [f for f in every if f.detection.slug == detections.DEFAULT]
        kept = {a.detection.slug: run.kept.get(a.detection.id, 0) for a in active}
        note = f" of {len(active)} detections, rows kept {kept}" if len(active) > 1 else ""
    records = {id(f): f.to_record() for f in every}
    work = time.perf_counter() - t0
    rows = [(*f.key, f.count, f.first_ms, f.last_ms) for f in findings]
    repos = digest([(*f.key, records[id(f)]["repositories"]) for f in findings])
    return summary(
        rows,
        {
            "work_s": work,
            "repos_digest": repos,
            "threads": 1,
            "note": f"matched {run.matched:,}, trusted {run.trusted:,}, {len(records)} records"
            + note,
        },
    )


BOTH = ["ecr-upload-unknown-user", "ecr-upload-outside-business-hours"]


def run_scan_all(path: Path) -> dict[str, Any]:
    """The scan with the whole ESCU catalogue enabled (``--detection all``, 27 detections):
    one read serves them all (issue 20: at most 1.5x the wall time and 1.2x the peak memory
    of the default detection alone)."""
    from detector import detections

    return run_scan(path, detections.choose(["all"]))


def run_scan_both_default(path: Path) -> dict[str, Any]:
    """Both ECR detections with default options: every call of the object falls inside
    business hours (Friday 10:00-11:00 UTC), so the second detection reads and judges every
    PutImage row but reports none: the cost of running it, without findings to show."""
    return run_scan(path, BOTH)


def run_scan_both(path: Path) -> dict[str, Any]:
    """The scan with both ECR detections enabled: one read serves both. The object's calls
    fall between 10:00 and 11:00 UTC on a Friday; business hours from 10:30 put about half
    of them outside, so the second detection has real findings to aggregate."""
    return run_scan(path, BOTH, {"BUSINESS_HOURS_START": "10:30"})


def _duckdb_sql(path: Path, with_repos: bool) -> str:
    trusted = ", ".join(f"'{v}'" for v in TRUSTED)
    is_trusted = " OR ".join(f"coalesce({p} IN ({trusted}), false)" for p in TRUST_PATHS)
    keys = ", ".join(KEY_PATHS)
    repos = (
        ", list(DISTINCT json_extract_string(api.request.data, '$.repositoryName'))"
        " FILTER (WHERE json_extract_string(api.request.data, '$.repositoryName') IS NOT NULL)"
        if with_repos
        else ""
    )
    return (
        f'SELECT {keys}, count(*), min("time"), max("time"){repos} '
        f"FROM read_parquet('{path}') "
        f"WHERE api.operation = '{TARGET}' AND NOT ({is_trusted}) "
        f"GROUP BY {keys}"
    )


def _run_duckdb(path: Path, with_repos: bool) -> dict[str, Any]:
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET threads=1")
    result = con.execute(_duckdb_sql(path, with_repos)).fetchall()
    work = time.perf_counter() - t0
    n = len(KEY_PATHS) + 3
    extra: dict[str, Any] = {"work_s": work, "threads": 1}
    if with_repos:
        extra["repos_digest"] = digest([(*r[: len(KEY_PATHS)], sorted(r[n])) for r in result])
    return summary([tuple(r[:n]) for r in result], extra)


def run_duckdb(path: Path) -> dict[str, Any]:
    return _run_duckdb(path, with_repos=False)


def run_duckdb_repos(path: Path) -> dict[str, Any]:
    return _run_duckdb(path, with_repos=True)


def run_pyarrow_full(path: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    table = pq.read_table(path)

    def col(t: pa.Table, dotted: str) -> pa.ChunkedArray:
        top, *rest = dotted.split(".")
        return pc.struct_field(t[top], rest) if rest else t[top]

    table = table.filter(pc.fill_null(pc.equal(col(table, "api.operation"), TARGET), False))
    trusted = pa.array(TRUSTED, pa.string())
    hit = None
    for p in TRUST_PATHS:
        h = pc.fill_null(pc.is_in(col(table, p), value_set=trusted), False)
        hit = h if hit is None else pc.or_(hit, h)
    table = table.filter(pc.invert(hit))
    names = [f"k{i}" for i in range(len(KEY_PATHS))]
    flat = pa.table([col(table, p) for p in KEY_PATHS] + [table["time"]], names=[*names, "t"])
    grouped = flat.group_by(names).aggregate([([], "count_all"), ("t", "min"), ("t", "max")])
    work = time.perf_counter() - t0
    rows = list(
        zip(*(grouped[c].to_pylist() for c in [*names, "count_all", "t_min", "t_max"]), strict=True)
    )
    return summary(rows, {"work_s": work, "threads": pa.cpu_count()})


def run_pandas_full(path: Path) -> dict[str, Any]:
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_parquet(path)

    def get(values: Iterable[Any], dotted: str) -> list[Any]:
        out = []
        parts = dotted.split(".")
        for v in values:
            for p in parts:
                v = None if v is None else v.get(p)
            out.append(v)
        return out

    top = {p: p.split(".", 1)[0] for p in (*KEY_PATHS, *TRUST_PATHS)}
    df = df[[op == TARGET for op in get(df["api"], "operation")]]
    sub = {p: get(df[top[p]], p.split(".", 1)[1]) for p in {*KEY_PATHS, *TRUST_PATHS}}
    trusted = [any(sub[p][i] in TRUSTED for p in TRUST_PATHS) for i in range(len(df))]
    flat = pd.DataFrame({p: sub[p] for p in KEY_PATHS} | {"time": df["time"].to_numpy()})
    flat = flat[[not t for t in trusted]]
    grouped = flat.groupby(list(KEY_PATHS), dropna=False)["time"].agg(["size", "min", "max"])
    work = time.perf_counter() - t0
    rows = [
        (*k, n, lo, hi) for k, (n, lo, hi) in zip(grouped.index, grouped.to_numpy(), strict=True)
    ]
    return summary(rows, {"work_s": work, "threads": 1})


CONTENDERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "scan": run_scan,
    "scan-both": run_scan_both,
    "scan-both-default": run_scan_both_default,
    "scan-all": run_scan_all,
    "duckdb": run_duckdb,
    "duckdb+repos": run_duckdb_repos,
    "pyarrow-full": run_pyarrow_full,
    "pandas-full": run_pandas_full,
    # The scan from another checkout of detector/ (``--alt DIR``), to A/B a change to it.
    "scan-alt": run_scan,
}
DEFAULT_CONTENDERS = (
    "scan",
    "scan-both-default",
    "scan-both",
    "scan-all",
    "duckdb",
    "duckdb+repos",
    "pyarrow-full",
    "pandas-full",
)
# Issue 12: scanning with both detections costs at most this much more than with one.
GOAL_BOTH = 1.10
# Issue 20: all 27 detections against the default one alone.
GOAL_ALL_WALL = 1.5
GOAL_ALL_RSS = 1.2
ALT_ENV = "BENCH_ALT_PATH"


class _NoPandas:
    """Import hook making ``import pandas`` fail, as where pandas is not installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def hide_pandas() -> None:
    """Run a contender as deployed (the Lambda package has no pandas).

    pyarrow imports pandas, if it is installed, on the first conversion of a Python value
    (``pa.scalar("PutImage")``, ``pc.equal(arr, "PutImage")``): in this dev venv that would add
    ~0.5 s and ~40 MB to any contender that never uses pandas. (``sys.modules["pandas"] = None``
    does not work: pyarrow's Cython import then gets None instead of an ImportError.)
    """
    sys.meta_path.insert(0, _NoPandas())


def child_main(
    name: str,
    path: Path,
    rows: int,
    profile: bool,
    out_dir: Path | None = None,
    large: str | None = None,
) -> None:
    """Entry point of a subprocess: prints one JSON line with its result.

    ``name`` is a contender, or the task ``generate``, ``describe`` or ``lambda-*`` (kept out
    of the parent so that the parent never holds Arrow memory, see ``run_child``).
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if name == "scan-alt":
        sys.path.insert(0, os.environ[ALT_ENV])
    if name == "generate":
        generate(path, rows)
        return
    if name == "describe":
        print(json.dumps(describe(path)))
        return
    if name == "generate-large":
        from benchmarks import large_objects

        large_objects.generate(large or "")
        return
    if name == "lambda-setup":
        from benchmarks import lambda_bench

        print(json.dumps(lambda_bench.setup(path, Path(out_dir or "."))))
        return
    if name == "lambda-invoke":
        from benchmarks import lambda_bench

        hide_pandas()
        print(json.dumps(lambda_bench.invoke(path)))
        return
    if name != "pandas-full":
        hide_pandas()
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        result = prof.runcall(CONTENDERS[name], path)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(20)
    else:
        result = CONTENDERS[name](path)
    result["in_process_s"] = time.perf_counter() - T_START
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------
# Parent: run each contender in its own process, measure, compare
# --------------------------------------------------------------------------------------------


def self_command(task: str, path: Path, *extra: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run ``task`` of this script in a fresh interpreter."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        task,
        "--path",
        str(path),
        *extra,
    ]
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return cmd, os.environ | {"PYTHONPATH": pythonpath}


def run_task(task: str, path: Path, *extra: str) -> str:
    """Run a helper task (generate, describe, profile) in a child; its stdout."""
    cmd, env = self_command(task, path, *extra)
    done = subprocess.run(cmd, env=env, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    return done.stdout


@dataclass
class Outcome:
    name: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    status: str = "ok"
    result: dict[str, Any] = field(default_factory=dict)


def run_child(name: str, path: Path, timeout_s: float, mem_cap_mb: float) -> Outcome:
    """Run one contender; wall from spawn to exit, peak RSS from ``wait4`` of that child.

    Linux starts a child's ``ru_maxrss`` at the parent's RSS at fork (vfork: the parent's
    peak), so the parent keeps itself small: it never imports pyarrow and runs generation in a
    child too. Its RSS (~20 MB) is far below any contender's.

    The child is killed if it runs longer than ``timeout_s`` or its RSS (polled) exceeds
    ``mem_cap_mb``, so a baseline that cannot cope is reported instead of hanging the machine.
    """
    import psutil

    cmd, env = self_command(name, path)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, env=env, cwd=ROOT, start_new_session=True
        )
        ps = psutil.Process(proc.pid)
        status, killed_for = 0, ""
        polled_peak = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            elapsed = time.perf_counter() - t0
            with contextlib.suppress(psutil.Error):
                polled_peak = max(polled_peak, ps.memory_info().rss / 2**20)
            if not killed_for and (elapsed > timeout_s or polled_peak > mem_cap_mb):
                killed_for = (
                    f"killed: over {timeout_s:.0f} s"
                    if elapsed > timeout_s
                    else f"killed: RSS over {mem_cap_mb / 1024:.0f} GiB cap"
                )
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        peak = max(usage.ru_maxrss / 1024, polled_peak)  # ru_maxrss is KiB on Linux
        cpu = usage.ru_utime + usage.ru_stime
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if stderr.strip():
        sys.stderr.write(stderr)
    if killed_for:
        return Outcome(name, wall, cpu, peak, killed_for)
    if proc.returncode != 0:
        last = stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return Outcome(name, wall, cpu, peak, f"failed: {last[0][:80]}")
    return Outcome(name, wall, cpu, peak, "ok", json.loads(stdout.strip().splitlines()[-1]))


def best_of(
    names: Sequence[str], path: Path, repeat: int, timeout_s: float, mem_cap_mb: float
) -> list[Outcome]:
    """Each contender's best run of ``repeat``, taken in rounds (one run of each contender per
    round), so that a slow spell of the machine hits every contender alike: the comparisons
    (scan-both against scan, say) are of neighbouring runs, not of minutes apart."""
    runs: dict[str, list[Outcome]] = {name: [] for name in names}
    for round_ in range(repeat):
        for name in names:
            done = runs[name]
            if done and done[-1].status != "ok":
                continue  # failed (or killed) once: not run again
            if round_ == 0:
                print(f"running {name} ...", flush=True)
            done.append(run_child(name, path, timeout_s, mem_cap_mb))
    out = []
    for name in names:
        done = runs[name]
        failed = [o for o in done if o.status != "ok"]
        out.append(failed[0] if failed else min(done, key=lambda o: o.wall_s))
    return out


def print_table(outcomes: list[Outcome], rows: int, repeat: int) -> None:
    head = (
        f"{'contender':<14} {'wall s':>7} {'cpu s':>6} {'work s':>7} {'peak RSS MB':>11} "
        f"{'rows/s':>11} {'thr':>3} {'groups':>7} {'count':>7}  digest / status"
    )
    print(head)
    print("-" * len(head))
    for o in outcomes:
        r = o.result
        if o.status == "ok":
            tail = f"{r['groups']:>7} {r['total']:>7}  {r['digest']}"
            work, thr = f"{r['work_s']:>7.2f}", f"{r['threads']:>3}"
        else:
            tail, work, thr = f"{'-':>7} {'-':>7}  {o.status}", f"{'-':>7}", f"{'-':>3}"
        print(
            f"{o.name:<14} {o.wall_s:>7.2f} {o.cpu_s:>6.2f} {work} {o.peak_rss_mb:>11.0f} "
            f"{rows / o.wall_s:>11,.0f} {thr} {tail}"
        )
    print(
        "wall = whole subprocess (interpreter start, imports, work); cpu = its user+sys time;\n"
        "work = in-process time of the contender's function; rows/s = object rows / wall;\n"
        f"best wall of {repeat} run(s) each; page cache warm; pandas hidden except pandas-full."
    )


def check_agreement(outcomes: list[Outcome]) -> bool:
    ok = [o for o in outcomes if o.status == "ok"]
    by = {o.name: o.result for o in ok}
    if "scan" not in by:
        print("agreement: scan did not run or failed; nothing to compare against")
        return False
    ref = by["scan"]
    same = [
        n
        for n, r in by.items()
        if (r["groups"], r["total"], r["digest"]) == (ref["groups"], ref["total"], ref["digest"])
    ]
    differ = [n for n in by if n not in same]
    good = not differ
    print(
        f"agreement on (groups, count, per-group count/first/last digest) with scan: "
        f"{'YES' if good else 'NO'} — same: {', '.join(same)}"
        + (f"; DIFFERENT: {', '.join(differ)}" if differ else "")
    )
    with_repos = [n for n in ("scan-alt", "duckdb+repos") if n in by]
    if with_repos:
        same_repos = all(by[n].get("repos_digest") == ref.get("repos_digest") for n in with_repos)
        good = good and same_repos
        print(
            f"agreement on per-group repository lists (scan vs {', '.join(with_repos)}): "
            f"{'YES' if same_repos else 'NO'}"
        )
    skipped = [o.name for o in outcomes if o.status != "ok"]
    if skipped:
        print(f"not compared (did not finish): {', '.join(skipped)}")
    return good


def print_goals(outcomes: list[Outcome]) -> None:
    by = {o.name: o for o in outcomes if o.status == "ok"}
    for name in ("scan-both-default", "scan-both"):
        if "scan" not in by or name not in by:
            continue
        one, both = by["scan"], by[name]
        for what, a, b in (
            ("wall", one.wall_s, both.wall_s),
            ("work", one.result["work_s"], both.result["work_s"]),
            ("cpu", one.cpu_s, both.cpu_s),
        ):
            verdict = "MET" if b <= a * GOAL_BOTH else "MISSED"
            print(
                f"goal {name} {what} {b:.2f} s <= {GOAL_BOTH:.2f} x scan {a:.2f} s "
                f"(+{(b / a - 1) * 100:.1f} %): {verdict}"
            )
        print(
            f"  peak RSS {name} {both.peak_rss_mb:.0f} MB vs scan {one.peak_rss_mb:.0f} MB; "
            f"{both.result.get('note', '')}"
        )
    if "scan" in by and "scan-all" in by:
        one, every = by["scan"], by["scan-all"]
        wall = "MET" if every.wall_s <= one.wall_s * GOAL_ALL_WALL else "MISSED"
        rss = "MET" if every.peak_rss_mb <= one.peak_rss_mb * GOAL_ALL_RSS else "MISSED"
        print(
            f"goal scan-all wall {every.wall_s:.2f} s <= {GOAL_ALL_WALL:.1f} x scan "
            f"{one.wall_s:.2f} s (x{every.wall_s / one.wall_s:.2f}): {wall}"
        )
        print(
            f"goal scan-all peak RSS {every.peak_rss_mb:.0f} MB <= {GOAL_ALL_RSS:.1f} x scan "
            f"{one.peak_rss_mb:.0f} MB (x{every.peak_rss_mb / one.peak_rss_mb:.2f}): {rss}"
        )
        print(f"  {every.result.get('note', '')}")
    for name in ("scan", "scan-alt"):
        scan = by.get(name)
        if scan is None:
            continue
        print(f"goals for {name}:")
        for ref in ("duckdb", "duckdb+repos"):
            if ref in by:
                d = by[ref]
                verdict = "MET" if scan.wall_s <= d.wall_s else "MISSED"
                print(
                    f"  wall {scan.wall_s:.2f} s <= {ref} (threads=1) wall {d.wall_s:.2f} s: "
                    f"{verdict} (cpu {scan.cpu_s:.2f} vs {d.cpu_s:.2f} s, "
                    f"work {scan.result['work_s']:.2f} vs {d.result['work_s']:.2f} s)"
                )
        verdict = "MET" if scan.peak_rss_mb <= GOAL_RSS_MB else "MISSED"
        print(f"  peak RSS {scan.peak_rss_mb:.0f} MB <= {GOAL_RSS_MB:.0f} MB: {verdict}")
        print(f"  {scan.result.get('note', '')}")


def machine() -> str:
    def v(pkg: str) -> str:
        try:
            return pkg_version(pkg)
        except Exception:
            return "absent"

    cpu = platform.processor() or platform.machine()
    return (
        f"machine: {os.cpu_count()} CPUs ({cpu}), "
        f"Linux {platform.release()}; Python {platform.python_version()}; "
        f"pyarrow {v('pyarrow')}, duckdb {v('duckdb')}, pandas {v('pandas')}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=4_000_000, help="rows in the test object")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep cached objects of other sizes in .bench/ (default: remove them)",
    )
    ap.add_argument(
        "--only",
        default=",".join(DEFAULT_CONTENDERS),
        help=f"comma-separated contenders (default: {','.join(DEFAULT_CONTENDERS)}; also scan-alt)",
    )
    ap.add_argument(
        "--alt",
        type=Path,
        help="a directory holding another detector/ package: adds contender scan-alt after scan",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs per contender; best wall kept")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per contender run")
    ap.add_argument("--mem-cap-gb", type=float, default=10.0, help="RSS cap per contender")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="run the --only contenders once under cProfile, print stats, no table",
    )
    lam = ap.add_mutually_exclusive_group()
    lam.add_argument("--no-lambda", action="store_true", help="skip the Lambda path section")
    lam.add_argument("--lambda-only", action="store_true", help="run only the Lambda path")
    ap.add_argument(
        "--lambda-scenario",
        action="append",
        metavar="NAME",
        help="only the Lambda scenarios whose name starts with NAME (repeatable), e.g. 128MB",
    )
    ap.add_argument(
        "--no-large",
        action="store_true",
        help="skip the section scanning objects of large requests (3,000 x 95 KB)",
    )
    ap.add_argument(
        "--child",
        choices=[
            *CONTENDERS,
            "generate",
            "generate-large",
            "describe",
            "lambda-setup",
            "lambda-invoke",
        ],
        help=argparse.SUPPRESS,
    )
    ap.add_argument("--large", help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        child_main(args.child, args.path, args.rows, args.profile, args.out, args.large)
        return 0

    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(CONTENDERS)
    if unknown:
        ap.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    if args.alt is not None:
        if not (args.alt / "detector" / "__init__.py").is_file():
            ap.error(f"--alt {args.alt}: no detector/ package there")
        os.environ[ALT_ENV] = str(args.alt.resolve())
        if "scan-alt" not in names:
            names.insert(names.index("scan") + 1 if "scan" in names else 0, "scan-alt")
    elif "scan-alt" in names:
        ap.error("scan-alt needs --alt DIR")

    print(machine())
    path = object_path(args.rows)
    if not path.exists():
        print(
            f"generating {args.rows:,} rows (once; cached in {CACHE.relative_to(ROOT)}/) ...",
            flush=True,
        )
        run_task("generate", path, "--rows", str(args.rows))
    if not args.keep:
        prune_cache(path)
    info = json.loads(run_task("describe", path))
    rows = info["rows"]
    print(f"object: {path.relative_to(ROOT)}")
    print(
        f"  {info['bytes'] / 1e6:.1f} MB ({info['bytes'] / 2**20:.1f} MiB), {rows:,} rows, "
        f"{info['row_groups']} row groups, {info['columns']} leaf columns, {COMPRESSION}"
    )
    warm_page_cache(path)

    if args.profile:
        for name in names:
            sys.stdout.write(run_task(name, path, "--profile"))
        return 0

    agree = True
    if not args.lambda_only:
        print(f"allowlist: {ALLOWLIST_TEXT.strip()} (its sessions are trusted)")
        outcomes = best_of(names, path, args.repeat, args.timeout, args.mem_cap_gb * 1024)
        print()
        print_table(outcomes, rows, args.repeat)
        print()
        agree = check_agreement(outcomes)
        print_goals(outcomes)
    if not args.lambda_only and not args.no_large:
        from benchmarks import large_objects

        scans = [n for n in ("scan", "scan-alt") if n in names] or ["scan"]
        agree = (
            large_objects.section(
                scans, run_task, run_child, args.repeat, args.timeout, args.mem_cap_gb * 1024
            )
            and agree
        )
    if not args.no_lambda:
        from benchmarks import lambda_bench

        lambda_bench.run(path, run_task, run_child, args.timeout, args.lambda_scenario or ())
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
