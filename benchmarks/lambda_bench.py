"""The Lambda path of ``make bench``: ``detector.handler.lambda_handler`` against moto's server.

moto's ThreadedMotoServer (``motoserver.py``, a process of its own) stands in for S3, SSM, SNS
and Security Hub. A setup child uploads (a) the benchmark's 128 MB object and (b) 200 small
objects (20 distinct objects of 20K rows, both OCSF versions, each under 10 keys), creates the
allowlist parameters and the findings topic, and writes the SQS events: one record per
invocation for the large object, ten per invocation (a full SQS batch) for the small ones.
Each scenario then runs in a fresh interpreter that imports the handler and invokes it with
every event of the scenario, as one warm Lambda execution environment would.

Reported per scenario: bytes fetched from S3 and GET requests (``S3Store.stats``), the import
time of ``detector.handler``, the first (cold) and the mean of the other (warm) invocations,
CPU per invocation, the child's wall time and peak RSS, and an estimated Lambda cost per
million announced objects at the template's ``MemorySize``: arm64 price
$0.0000133334 per GB-second plus $0.20 per million requests, applied to durations measured
here on x86, scaled naively. Lambda gives a function of 1024 MB about 0.58 of a vCPU
(1 vCPU at 1769 MB), so a second estimate takes the larger of the measured duration and CPU
time / that share.

The ``manifests x4`` scenarios announce four objects of 3,000 PutImage calls with ~95 KB
manifests each (``large_objects.py``) in one SQS batch, so the function scans all four at
once (``pipeline.MAX_PARALLEL_OBJECTS``): its peak RSS against its memory (1024 MB) is the
point, in pages as parquet-mr writes them and in pyarrow's 115 MB pages.

The scan scenarios run without a state table (``STATE_TABLE``). The ``flood`` scenario is issue
10's attack, run as deployed (state table, 60-minute window): one object holding 3,000 failed
``PutImage`` calls by one caller, each with its own user agent, and one push by a second unknown
caller. It reports the handler time and how many SNS messages reached a queue subscribed to its
topic (goal: one message, in at most 60 s).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench" / "lambda"  # a subdirectory: bench.py's cache pruning leaves it alone

BUCKET = "aws-security-data-lake-us-east-1-bench"
TOPIC = "bench-findings"
# "trust-all": every principal of the synthetic data (all in account 111122223333: assumed-role
# sessions, their roles, IAM users) is trusted, so every PutImage is looked at and none reported.
# A catch-all (``*``) is refused as an allowlist entry; one account's ARNs are not.
PARAMS = {
    "ci": ("/bench/allowlist-ci", "arn:aws:iam::111122223333:role/ci-deployer"),
    "trust-all": (
        "/bench/allowlist-trust-all",
        "arn:aws:sts::111122223333:assumed-role/*\narn:aws:iam::111122223333:*",
    ),
}
FLOOD_TOPIC = "bench-flood-findings"
FLOOD_QUEUE = "bench-flood-inbox"
FLOOD_TABLE = "bench-flood-state"
FLOOD_CALLS = 3000
FLOOD_GOAL_S = 60.0
SMALL_DISTINCT = 20
SMALL_COPIES = 10
SMALL_ROWS = 20_000
BATCH = 10  # records per SQS invocation (the template's BatchSize)
LARGE_INVOCATIONS = 2  # cold, then warm
PRICE_GB_S = 0.0000133334  # arm64, per GB-second
PRICE_REQUEST = 0.20 / 1_000_000
VCPU_MB = 1769  # memory at which Lambda gives one full vCPU


@dataclass(frozen=True)
class Scenario:
    name: str
    events: str  # "large" or "small": which events file
    allowlist: str  # key of PARAMS
    parallel: int | None = None  # MAX_PARALLEL_OBJECTS override (None: the code's)
    flood: bool = False  # the state table, the flood topic, and count the messages
    detections: str = ""  # DETECTIONS (empty: the default detection)


SCENARIOS = (
    Scenario("128MB ci", "large", "ci"),
    Scenario("128MB ci, DETECTIONS=all", "large", "ci", detections="all"),
    Scenario("128MB trust-all", "large", "trust-all"),
    Scenario("small ci", "small", "ci"),
    Scenario("small trust-all", "small", "trust-all"),
    Scenario("small trust-all serial", "small", "trust-all", parallel=1),
    Scenario("flood (state table)", "flood", "ci", flood=True),
    Scenario("manifests x4", "manifests", "ci"),
    Scenario("manifests x4 pyarrow pg", "manifests-pyarrow", "ci"),
)
# events file -> the large-request object announced four times in one batch (large_objects.py)
LARGE_EVENTS = {"manifests": "manifests", "manifests-pyarrow": "manifests, pyarrow pages"}
LARGE_COPIES = 4


def memory_mb() -> int:
    """The template's default ``MemorySize``."""
    text = (ROOT / "template.yaml").read_text()
    m = re.search(r"^  MemorySize:\n(?:    .*\n)*?    Default: (\d+)", text, re.MULTILINE)
    return int(m.group(1)) if m else 1024


# --------------------------------------------------------------------------------------------
# Children
# --------------------------------------------------------------------------------------------


def _small_objects() -> Iterator[tuple[int, Path]]:
    """The distinct small objects (version, path), generated once into the cache."""
    import pyarrow.parquet as pq

    from tests.lake import nest, synthetic_columns

    CACHE.mkdir(parents=True, exist_ok=True)
    for i in range(SMALL_DISTINCT):
        version = 1 + i % 2
        path = CACHE / f"small-v{version}-{SMALL_ROWS}rows-{i:02d}.parquet"
        if not path.exists():
            cols = synthetic_columns(SMALL_ROWS, 0.005, seed=7000 + i, uid_start=i * SMALL_ROWS)
            pq.write_table(nest(cols, version), path.with_suffix(".tmp"), compression="gzip")
            path.with_suffix(".tmp").replace(path)
        yield version, path


def _record(key: str, size: int, etag: str, n: int) -> dict[str, Any]:
    body = {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {
            "bucket": {"name": BUCKET},
            "object": {"key": key, "size": size, "etag": etag.strip('"')},
            "requester": "securitylake.amazonaws.com",
            "reason": "PutObject",
        },
    }
    return {
        "messageId": f"bench-{n:06d}",
        "receiptHandle": "bench",
        "body": json.dumps(body),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:111122223333:AmazonSecurityLake-subscriber",
        "awsRegion": "us-east-1",
    }


def _flood_object() -> bytes:
    """3,000 failed PutImage calls by one caller, each with its own user agent, and one push by
    a second unknown caller (issue 10's flood)."""
    import io

    from tests import lake

    attacker = f"arn:aws:iam::{lake.ACCOUNT}:user/flooder"
    events = [
        lake.event(
            arn=attacker,
            session_issuer=None,
            status="Failure",
            error_code="AccessDenied",
            user_agent=f"flood-agent/{i}",
            time_ms=lake.T0_MS + i,
        )
        for i in range(FLOOD_CALLS)
    ]
    events.append(lake.event(arn=f"arn:aws:iam::{lake.ACCOUNT}:user/second", session_issuer=None))
    buf = io.BytesIO()
    lake.write_object(buf, events, 2)
    return buf.getvalue()


def _flood(s3: Any, n: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The flood's bucket object, topic with a queue subscribed, state table and event."""
    import boto3

    from tests.lake import key_for

    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name=FLOOD_TOPIC)["TopicArn"]
    queue = sqs.create_queue(QueueName=FLOOD_QUEUE)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["Attributes"]["QueueArn"])
    boto3.client("dynamodb").create_table(
        TableName=FLOOD_TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    data = _flood_object()
    key = key_for(2, name="bench-flood")
    etag = s3.put_object(Bucket=BUCKET, Key=key, Body=data)["ETag"]
    events = [{"Records": [_record(key, len(data), etag, n)]}]
    info = {"objects": 1, "bytes": len(data), "per_invocation": 1, "topic": topic, "queue": queue}
    return events, info


def setup(large: Path, out: Path) -> dict[str, Any]:
    """(Child) AWS resources, uploads and the events files in ``out``; what the parent needs."""
    import boto3

    from tests.lake import key_for

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    ssm = boto3.client("ssm")
    for name, value in PARAMS.values():
        ssm.put_parameter(Name=name, Type="String", Value=value, Overwrite=True)
    topic = boto3.client("sns").create_topic(Name=TOPIC)["TopicArn"]
    boto3.client("securityhub").enable_security_hub()

    n = 0
    key = key_for(2, name="bench-large")
    s3.upload_file(str(large), BUCKET, key)
    etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
    large_events = []
    for _ in range(LARGE_INVOCATIONS):
        n += 1
        large_events.append({"Records": [_record(key, large.stat().st_size, etag, n)]})

    records, small_bytes = [], 0
    for version, path in _small_objects():
        data = path.read_bytes()
        for copy in range(SMALL_COPIES):
            key = key_for(version, name=f"{path.stem}-{copy}")
            etag = s3.put_object(Bucket=BUCKET, Key=key, Body=data)["ETag"]
            n += 1
            records.append(_record(key, len(data), etag, n))
            small_bytes += len(data)
    # Interleave so that every batch mixes versions and distinct objects.
    records.sort(key=lambda r: json.loads(r["body"])["detail"]["object"]["key"][::-1])
    small_events = [{"Records": records[i : i + BATCH]} for i in range(0, len(records), BATCH)]

    flood_events, flood = _flood(s3, n + 1)
    n += 1
    out.mkdir(parents=True, exist_ok=True)
    from benchmarks import large_objects

    large_info = {}
    for events_name, object_name in LARGE_EVENTS.items():
        source = large_objects.path(object_name)
        data = source.read_bytes()
        batch = []
        for copy in range(LARGE_COPIES):
            key = key_for(2, name=f"{source.stem}-{copy}")
            etag = s3.put_object(Bucket=BUCKET, Key=key, Body=data)["ETag"]
            n += 1
            batch.append(_record(key, len(data), etag, n))
        (out / f"{events_name}.json").write_text(json.dumps([{"Records": batch}]))
        large_info[events_name] = {
            "objects": LARGE_COPIES,
            "bytes": LARGE_COPIES * len(data),
            "per_invocation": LARGE_COPIES,
        }
        del data
    (out / "large.json").write_text(json.dumps(large_events))
    (out / "small.json").write_text(json.dumps(small_events))
    (out / "flood.json").write_text(json.dumps(flood_events))
    return large_info | {
        "flood": flood,
        "topic": topic,
        "large": {
            "objects": LARGE_INVOCATIONS,
            "bytes": LARGE_INVOCATIONS * large.stat().st_size,
            "per_invocation": 1,
        },
        "small": {"objects": len(records), "bytes": small_bytes, "per_invocation": BATCH},
    }


class _Context:
    function_name = "ecr-upload-detector"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:111122223333:function:ecr-upload-detector"
    memory_limit_in_mb = 1024
    aws_request_id = "bench"
    log_group_name = "/aws/lambda/ecr-upload-detector"
    log_stream_name = "bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000


def invoke(events_path: Path) -> dict[str, Any]:
    """(Child) import the handler, invoke it with every event of the file, report."""
    t0 = time.perf_counter()
    from detector import handler

    import_ms = (time.perf_counter() - t0) * 1000
    from detector.app import pipeline

    if os.environ.get("BENCH_MAX_PARALLEL"):
        pipeline.MAX_PARALLEL_OBJECTS = int(os.environ["BENCH_MAX_PARALLEL"])
    # Time the fetch-and-scan phase apart from alerting (Security Hub, SNS).
    scan_ms: list[float] = []
    scan_items = pipeline._scan_items

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return scan_items(*args, **kwargs)
        finally:
            scan_ms.append((time.perf_counter() - t) * 1000)

    pipeline._scan_items = timed  # type: ignore[assignment]
    durations, cpu, failed = [], [], 0
    for event in json.loads(events_path.read_text()):
        w0, c0 = time.perf_counter(), time.process_time()
        answer = handler.lambda_handler(event, _Context())
        durations.append((time.perf_counter() - w0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        failed += len(answer.get("batchItemFailures", []))
    stats = handler.app(_Context()).objects.stats
    messages = None
    if os.environ.get("BENCH_COUNT_QUEUE"):
        import boto3

        sqs, messages = boto3.client("sqs"), 0
        queue = os.environ["BENCH_COUNT_QUEUE"]
        while got := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages"):
            messages += len(got)
            for m in got:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    return {
        "messages": messages,
        "requests": stats.requests,
        "bytes": stats.bytes,
        "import_ms": import_ms,
        "durations_ms": durations,
        "cpu_ms": cpu,
        "scan_ms": scan_ms,
        "failed_items": failed,
        "pandas_loaded": "pandas" in sys.modules,
    }


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------


def run(
    large: Path,
    run_task: Callable[..., str],
    run_child: Callable[..., Any],
    timeout_s: float,
    only: Sequence[str] = (),
) -> None:
    """Start moto, set up, run every scenario (those whose name starts with one of ``only``,
    when given) in a child, print the table."""
    import tempfile

    from benchmarks import large_objects
    from benchmarks.motoserver import moto_server

    large_objects.ensure(run_task)
    mem = memory_mb()
    saved = dict(os.environ)
    try:
        with moto_server() as env, tempfile.TemporaryDirectory() as tmp:
            os.environ.update(env)
            print("setting up moto (uploads; small objects generated once) ...", flush=True)
            info = json.loads(run_task("lambda-setup", large, "--out", tmp).splitlines()[-1])
            os.environ.update(
                FINDINGS_TOPIC_ARN=info["topic"],
                SECURITY_HUB_ENABLED="true",
                POWERTOOLS_LOG_LEVEL="WARNING",
            )
            rows = []
            for sc in SCENARIOS:
                if only and not any(sc.name.startswith(o) for o in only):
                    continue
                print(f"running lambda: {sc.name} ...", flush=True)
                os.environ["ALLOWLIST_PARAMETER"] = PARAMS[sc.allowlist][0]
                os.environ["FINDINGS_TOPIC_ARN"] = info["topic"]
                for name in (
                    "BENCH_MAX_PARALLEL",
                    "STATE_TABLE",
                    "BENCH_COUNT_QUEUE",
                    "DETECTIONS",
                ):
                    os.environ.pop(name, None)
                if sc.detections:
                    os.environ["DETECTIONS"] = sc.detections
                if sc.flood:
                    os.environ.update(
                        FINDINGS_TOPIC_ARN=info["flood"]["topic"],
                        STATE_TABLE=FLOOD_TABLE,
                        BENCH_COUNT_QUEUE=info["flood"]["queue"],
                    )
                if sc.parallel is not None:
                    os.environ["BENCH_MAX_PARALLEL"] = str(sc.parallel)
                events = Path(tmp) / f"{sc.events}.json"
                outcome = run_child("lambda-invoke", events, timeout_s, 8 * 1024)
                rows.append((sc, info[sc.events], outcome))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    print_table(rows, mem)


def _cost(duration_ms: float, mem_mb: int, per_invocation: int) -> float:
    """Lambda cost of a million announced objects, ``per_invocation`` objects an invocation."""
    invocations = 1_000_000 / per_invocation
    billed_s = -(-duration_ms // 1) / 1000  # billed per started millisecond
    return invocations * (billed_s * mem_mb / 1024 * PRICE_GB_S + PRICE_REQUEST)


def print_table(rows: list[tuple[Scenario, dict[str, Any], Any]], mem: int) -> None:
    share = mem / VCPU_MB
    head = (
        f"{'scenario':<22} {'inv':>3} {'obj':>4} {'MB obj':>7} {'MB read':>7} {'%':>5} "
        f"{'GETs':>5} {'import':>6} {'first':>6} {'warm':>6} {'scan':>6} {'cpu':>6} {'wall s':>6} "
        f"{'RSS MB':>6} {'$/1M obj':>8} {'cpu-bound':>9}"
    )
    print()
    print(
        f"Lambda path (handler against moto's server; times in ms per invocation; cost at "
        f"{mem} MB, arm64 price, x86 measurement scaled naively)"
    )
    print(head)
    print("-" * len(head))
    for sc, data, o in rows:
        if o.status != "ok":
            print(f"{sc.name:<22} {o.status}")
            continue
        r = o.result
        durations, cpu = r["durations_ms"], r["cpu_ms"]
        warm = durations[1:] or durations
        warm_cpu = cpu[1:] or cpu
        mean = sum(warm) / len(warm)
        mean_cpu = sum(warm_cpu) / len(warm_cpu)
        warm_scan = r["scan_ms"][1:] or r["scan_ms"]
        mean_scan = sum(warm_scan) / len(warm_scan)
        per_inv = data["per_invocation"]
        cost = _cost(mean, mem, per_inv)
        cost_cpu = _cost(max(mean, mean_cpu / share), mem, per_inv)
        print(
            f"{sc.name:<22} {len(durations):>3} {data['objects']:>4} {data['bytes'] / 1e6:>7.1f} "
            f"{r['bytes'] / 1e6:>7.1f} {r['bytes'] / data['bytes']:>5.0%} {r['requests']:>5} "
            f"{r['import_ms']:>6.0f} {durations[0]:>6.0f} {mean:>6.0f} {mean_scan:>6.0f} "
            f"{mean_cpu:>6.0f} "
            f"{o.wall_s:>6.1f} {o.peak_rss_mb:>6.0f} {cost:>8.2f} {cost_cpu:>9.2f}"
        )
        if sc.events in LARGE_EVENTS:
            spare = mem - o.peak_rss_mb
            print(
                f"  {LARGE_COPIES} objects of 3,000 x 95 KB requests scanned at once: peak RSS "
                f"{o.peak_rss_mb:.0f} MB of the function's {mem} MB ({spare:.0f} MB spare): "
                f"{'MET' if spare > 0 else 'MISSED'}"
            )
        if r["failed_items"] or r["pandas_loaded"]:
            print(f"  !! failed items: {r['failed_items']}, pandas loaded: {r['pandas_loaded']}")
        if sc.flood:
            seconds = durations[0] / 1000
            ok = r["messages"] == 1 and seconds <= FLOOD_GOAL_S and not r["failed_items"]
            print(
                f"  flood: {FLOOD_CALLS} failed calls with {FLOOD_CALLS} user agents + 1 push by "
                f"another caller -> {r['messages']} SNS message(s) in {seconds:.1f} s of "
                f"handler time, cold (goal: 1 message in <= {FLOOD_GOAL_S:.0f} s): "
                f"{'MET' if ok else 'MISSED'}"
            )
    print(
        "inv = invocations (one Lambda environment: the first is cold); obj, MB obj = objects\n"
        "announced over all invocations and their size; MB read, GETs = fetched from S3, and\n"
        "% = MB read / MB obj; import = `import detector.handler`; first / warm = the first\n"
        "invocation / the mean of the others; scan = of warm, the part spent fetching and\n"
        "scanning (the rest is mostly Security Hub and SNS); cpu = CPU of a warm invocation\n"
        "(all threads); wall, RSS = the whole child; $/1M obj = Lambda cost per million\n"
        "announced objects at the warm duration; cpu-bound = the same with duration >= cpu /\n"
        f"{share:.2f} vCPU. moto is not S3: ~10 ms per request, no bandwidth limit, and it copies\n"
        "the whole object for every ranged GET (the 128MB times are pessimistic for ranges).\n"
    )
