"""Where one GET stops beating ranged GETs: the measurement behind ``SMALL_OBJECT_BYTES``.

For Security Lake-shaped objects of growing size (``tests.lake`` synthetic data as in
``bench.py``: OCSF v2, gzip, 0.5 % PutImage, row groups of 1Mi rows), each object is scanned
through ``detector.aws.s3.S3Store`` against moto's server (``motoserver.py``, its own process)
in both ways:

- ``one GET``: the whole object in one request, then read from memory;
- ``ranged``: the tail (footer) in one request, then one ranged GET per byte range pyarrow asks
  for (the needed column chunks, coalesced per row group).

and with two allowlists: the CI role (untrusted PutImage rows remain in every row group, so the
detail columns are read too) and one trusting everyone (only ``api.operation`` and the three
trust columns are read). Each cell is the best wall time of ``--repeat`` scans over one warm
client, with the GET requests and bytes received.

moto on localhost is not S3: it costs about 10 ms per request but has no bandwidth limit, and
it copies the whole object for every ranged GET (which favours "one GET" as objects grow). So
the run is repeated with S3-like conditions added on the client: ``--latency-ms`` sleeps before
every GET (first-byte latency) and ``--mbps`` caps each GET's transfer rate (one connection).
Those two numbers are assumptions, not measurements of S3; the request and byte counts are
exact whatever they are.

Usage: ``PYTHONPATH=. python benchmarks/s3_cutover.py [--rows 4096,16384,...]
[--latency-ms 20] [--mbps 80] [--repeat 3]``: moto as it is, then each combination (0 =
nothing added). Objects are cached in
``.bench/cutover/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench import CACHE, hide_pandas  # noqa: E402
from benchmarks.motoserver import moto_server, use  # noqa: E402

CUTOVER_CACHE = CACHE / "cutover"
BUCKET = "cutover-bench"
DEFAULT_ROWS = (2048, 8192, 32768, 65536, 131072, 262144, 524288, 1048576)
ALLOWLISTS = {
    "ci": "arn:aws:iam::111122223333:role/ci-deployer",
    # Every principal of the synthetic data (one account), without a catch-all entry.
    "trust-all": "arn:aws:sts::111122223333:assumed-role/*\narn:aws:iam::111122223333:*",
}


@dataclass
class Cell:
    seconds: float
    requests: int
    bytes: int


def object_for(rows: int) -> Path:
    """The cached object of ``rows`` rows (made like bench.py's, in a subdirectory so that
    bench.py's cache pruning leaves it alone)."""
    from benchmarks.bench import generate

    path = CUTOVER_CACHE / f"v2-{rows}rows-gzip.parquet"
    if not path.exists():
        print(f"  generating {rows:,} rows ...", file=sys.stderr, flush=True)
        generate(path, rows)
    return path


def measure(client: Any, key: str, size: int, allowlist: Any, ranged: bool, repeat: int) -> Cell:
    from detector.analysis.engine import scan_object
    from detector.aws import s3
    from detector.core.objects import ObjectRef

    s3.SMALL_OBJECT_BYTES = 0 if ranged else 1 << 62  # force the way under test
    best: Cell | None = None
    for _ in range(repeat):
        store = s3.S3Store(client)
        t0 = time.perf_counter()
        with store.open(ObjectRef(key=key, bucket=BUCKET, size=size)) as f:
            scan_object(f, key, allowlist)
        cell = Cell(time.perf_counter() - t0, store.stats.requests, store.stats.bytes)
        if best is None or cell.seconds < best.seconds:
            best = cell
    assert best is not None
    return best


def rows_arg(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def run(rows: list[int], conditions: list[tuple[float, float]], repeat: int) -> Iterator[str]:
    import boto3

    from detector.core.allowlist import Allowlist

    objects = [(n, object_for(n)) for n in rows]
    with moto_server() as env:
        use(env)
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        for _, path in objects:
            client.upload_file(str(path), BUCKET, path.name)
        added = {"latency_s": 0.0, "mbps": 0.0}

        def before_send(**_: Any) -> None:
            time.sleep(added["latency_s"])

        def after_call(http_response: Any, **_: Any) -> None:
            if added["mbps"]:
                n = int(http_response.headers.get("content-length", 0))
                time.sleep(n / (added["mbps"] * 1e6))

        client.meta.events.register("before-send.s3.GetObject", before_send)
        client.meta.events.register("after-call.s3.GetObject", after_call)
        for latency, mbps in conditions:
            added.update(latency_s=latency / 1000, mbps=mbps)
            yield (
                f"\nadded per GET: {latency:g} ms latency, "
                + (f"{mbps:g} MB/s transfer cap" if mbps else "no transfer cap")
            )
            yield (
                f"{'object':>9} {'rows':>9} {'allowlist':<9} | {'one GET ms':>10} | "
                f"{'ranged ms':>9} {'GETs':>4} {'MB':>6} {'% bytes':>7} | faster"
            )
            wins: dict[str, list[tuple[int, bool]]] = {name: [] for name in ALLOWLISTS}
            for n, path in objects:
                size = path.stat().st_size
                for name, text in ALLOWLISTS.items():
                    allowlist = Allowlist.parse(text)
                    one = measure(client, path.name, size, allowlist, False, repeat)
                    ranged = measure(client, path.name, size, allowlist, True, repeat)
                    wins[name].append((size, ranged.seconds < one.seconds))
                    yield (
                        f"{size / 1e6:>7.2f}MB {n:>9,} {name:<9} | {one.seconds * 1e3:>10.1f} | "
                        f"{ranged.seconds * 1e3:>9.1f} {ranged.requests:>4} "
                        f"{ranged.bytes / 1e6:>6.2f} {ranged.bytes / size:>7.1%} | "
                        f"{'ranged' if ranged.seconds < one.seconds else 'one GET'}"
                    )
            for name, points in wins.items():
                # The smallest size from which ranged wins at every larger size measured.
                cut = next(
                    (s for i, (s, _) in enumerate(points) if all(w for _, w in points[i:])), None
                )
                where = f"{cut / 1e6:.2f} MB" if cut is not None else "not within the sizes"
                yield f"  {name}: ranged is faster from {where} up"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=rows_arg, default=list(DEFAULT_ROWS), help="object sizes")
    ap.add_argument("--latency-ms", default="20", help="comma-separated added GET latencies")
    ap.add_argument("--mbps", default="80", help="comma-separated GET transfer caps, MB/s")
    ap.add_argument("--repeat", type=int, default=3, help="scans per cell; best kept")
    args = ap.parse_args(argv)
    hide_pandas()
    latencies = [float(x) for x in args.latency_ms.split(",") if x.strip()]
    caps = [float(x) for x in args.mbps.split(",") if x.strip()]
    # moto as it is, then with S3-like latency and transfer rate added
    conditions = [(0.0, 0.0)] + [(lat, cap) for lat in latencies for cap in caps if lat or cap]
    for line in run(args.rows, conditions, args.repeat):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
