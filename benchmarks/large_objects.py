"""The bench's objects of large requests (``tests.large_requests``), and their scan section.

Three objects, OCSF v2, one row group each, cached in ``.bench/large/``:

- ``manifests``: 3,000 failed PutImage calls by one unknown caller with ~95 KB manifests each,
  and one push by another unknown caller (every row reported), in pages of 100 rows at most
  (~10 MB here), as a writer checking page sizes every 100 rows (parquet-mr) makes them;
- ``manifests, pyarrow pages``: the same calls in pyarrow's default pages (1,024 rows: 115 MB,
  and a dictionary page as large), the worst pages seen;
- ``stacks``: 3,000 CreateStack calls with ~95 KB templates beside one push by an unknown
  caller (one row reported).

``section`` scans each with ``scan`` (and ``scan-alt`` with ``--alt``), one fresh interpreter
per run, and prints wall time and peak RSS; the goal is a scan of ``manifests`` under
``GOAL_MB``. The Lambda path (``lambda_bench.py``) scans four of them at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench" / "large"  # a subdirectory: bench.py's cache pruning leaves it alone
# The goal for one scan of the 3,000 x 95 KB object ("Trust under attack, round two").
GOAL_MB = 350.0
# name -> (kind in tests.large_requests.BUILDERS, rows between page size checks or "default")
OBJECTS: dict[str, tuple[str, str]] = {
    "manifests": ("manifest", "100"),
    "manifests, pyarrow pages": ("manifest", "default"),
    "stacks": ("stack", "100"),
}


def path(name: str) -> Path:
    kind, rows = OBJECTS[name]
    return CACHE / f"{kind}-3000x95KB-v2-pages{rows}.parquet"


def generate(name: str) -> None:
    """(Child) write the object ``name`` (building one holds ~1 GB: never in the parent)."""
    from tests import large_requests

    kind, rows = OBJECTS[name]
    target = path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    events = large_requests.BUILDERS[kind]()
    large_requests.write(tmp, events, 2, None if rows == "default" else int(rows))
    tmp.replace(target)


def ensure(run_task: Callable[..., str]) -> None:
    """Every object generated once (in children)."""
    for name in OBJECTS:
        if not path(name).exists():
            print(f"generating the large-request object {name!r} (once) ...", flush=True)
            run_task("generate-large", path(name), "--large", name)


def section(
    names: list[str],
    run_task: Callable[..., str],
    run_child: Callable[..., Any],
    repeat: int,
    timeout_s: float,
    mem_cap_mb: float,
) -> bool:
    """Scan each object with each contender of ``names`` (``scan``, ``scan-alt``); print the
    table; True when the contenders agree on every object."""
    ensure(run_task)
    rows = []
    for name in OBJECTS:
        for contender in names:
            best = None
            for _ in range(repeat):
                o = run_child(contender, path(name), timeout_s, mem_cap_mb)
                if o.status != "ok":
                    best = o
                    break
                best = o if best is None or o.wall_s < best.wall_s else best
            rows.append((name, best))
    print()
    print("Large requests (3,000 calls of ~95 KB each, one row group; each run a fresh process)")
    head = (
        f"{'object':<26} {'contender':<10} {'MB':>5} {'wall s':>7} {'cpu s':>6} "
        f"{'peak RSS MB':>11} {'findings':>8} {'calls':>6}  digest / status"
    )
    print(head)
    print("-" * len(head))
    agree = True
    for name in OBJECTS:
        size = path(name).stat().st_size / 1e6
        ref = None
        for obj, o in rows:
            if obj != name:
                continue
            if o.status != "ok":
                print(
                    f"{name:<26} {o.name:<10} {size:>5.0f} {o.wall_s:>7.2f} {'':>6} "
                    f"{o.peak_rss_mb:>11.0f} {'-':>8} {'-':>6}  {o.status}"
                )
                continue
            r = o.result
            print(
                f"{name:<26} {o.name:<10} {size:>5.0f} {o.wall_s:>7.2f} {o.cpu_s:>6.2f} "
                f"{o.peak_rss_mb:>11.0f} {r['groups']:>8} {r['total']:>6}  {r['digest']}"
            )
            key = (r["groups"], r["total"], r["digest"], r.get("repos_digest"))
            ref = key if ref is None else ref
            agree = agree and key == ref
    by = {(obj, o.name): o for obj, o in rows if o.status == "ok"}
    for contender in names:
        scan = by.get(("manifests", contender))
        if scan is not None:
            verdict = "MET" if scan.peak_rss_mb < GOAL_MB else "MISSED"
            print(
                f"goal {contender}: manifests peak RSS {scan.peak_rss_mb:.0f} MB < "
                f"{GOAL_MB:.0f} MB: {verdict}"
            )
    print(
        f"agreement between contenders on every object (findings, calls, digests): "
        f"{'YES' if agree else 'NO'}"
    )
    return agree
