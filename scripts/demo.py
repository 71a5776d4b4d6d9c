"""`make demo`: the whole pipeline against a local AWS emulator (moto), no account needed.

1. Writes a small Security Lake sample (both OCSF versions, laid out as Security Lake lays out
   CloudTrail management data) and starts moto's server as "AWS" (``AWS_ENDPOINT_URL``).
2. Creates the bucket, the allowlist parameter, the findings topic (with a queue subscribed so
   the message can be shown) and Security Hub, and uploads the sample.
3. Runs ``ecr-upload-detector scan s3://… --allowlist ssm:…`` against it.
4. Invokes ``detector.handler.lambda_handler`` with the samples in ``events/`` and prints what a
   person receives (the email text), what a machine receives (the JSON body) and the Security
   Hub findings read back through the API.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from tests import lake

ROOT = Path(".demo")
EVENTS = Path("events")
BUCKET = "aws-security-data-lake-us-east-1-demo"
PARAMETER = "/ecr-upload-detector/allowlist"
STATE_TABLE = "ecr-upload-detector-state"
REGION = "us-east-1"
ACCOUNT = lake.ACCOUNT
T0 = lake.T0_MS
MINUTE = 60_000

ALLOWLIST = f"""\
# Principals trusted to push images. One ARN or glob per line.
# The CI role: covers every session of it (arn:aws:sts::…:assumed-role/ci-deployer/…).
arn:aws:iam::{ACCOUNT}:role/ci-deployer
# Builds run by AWS CodeBuild.
codebuild.amazonaws.com
# Release engineers, by glob.
arn:aws:iam::{ACCOUNT}:user/release-*
"""


def sample_events(version: int) -> list[dict[str, Any]]:
    """A morning in a small account: trusted pushes, noise, and two that nobody vouched for."""
    ci = [
        lake.event(
            time_ms=T0 + i * MINUTE,
            arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deployer/build-{i}",
            request_json=lake.put_image_request("payments/api", f"build-{100 + i}"),
        )
        for i in range(6)
    ]
    service = {
        "arn": None,
        "principal_id": None,
        "account": None,
        "session_issuer": None,
        "user_type": "AWSService",
        "src_ip": None,
    }
    codebuild = [
        lake.event(
            time_ms=T0 + 3 * MINUTE,
            invoked_by="codebuild.amazonaws.com",
            src_domain="codebuild.amazonaws.com",
            user_agent="codebuild.amazonaws.com",
            **service,
        )
    ]
    release = [
        lake.event(
            time_ms=T0 + 7 * MINUTE,
            arn=f"arn:aws:iam::{ACCOUNT}:user/release-ana",
            session_issuer=None,
            user_type="IAMUser",
            user_name="release-ana",
        )
    ]
    # What the detection is for: someone else publishing images.
    intruder = [
        lake.event(
            time_ms=T0 + (20 + i) * MINUTE + version * 1000,
            arn=f"arn:aws:iam::{ACCOUNT}:user/old-contractor",
            session_issuer=None,
            principal_id="AIDAEXAMPLECONTRACTOR",
            user_type="IAMUser",
            user_name="old-contractor",
            credential_uid="AKIAEXAMPLECONTRACTOR1",  # a long-term key: disable it
            src_ip="203.0.113.66",
            user_agent="docker/20.10.7 go/go1.13.15 os/linux arch/amd64",
            status="Success" if i else "Failure",
            error_code=None if i else "ImageAlreadyExistsException",
            request_json=lake.put_image_request("payments/api", "latest"),
        )
        for i in range(3)
    ]
    # A role nobody vouched for, trying from two sessions with names of its own choosing: the
    # Splunk grouping gives one finding per session, the alert is one, for the role.
    legacy = [
        lake.event(
            time_ms=T0 + (30 + i) * MINUTE + version * 1000,
            arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/legacy-deployer/{session}",
            session_issuer=f"arn:aws:iam::{ACCOUNT}:role/legacy-deployer",
            principal_id=f"AROAEXAMPLELEGACY:{session}",
            src_ip="192.0.2.44",
            user_agent="aws-cli/2.15.0 Python/3.11.6",
            status="Failure",
            error_code="AccessDenied",
            request_json=lake.put_image_request("payments/api", "hotfix"),
        )
        for i, session in enumerate(["deploy-1730", "jenkins-nightly"])
    ]
    replication = [
        lake.event(
            time_ms=T0 + 42 * MINUTE,
            invoked_by="ecr.amazonaws.com",
            src_domain="ecr.amazonaws.com",
            user_agent="ecr.amazonaws.com",
            request_json=lake.put_image_request("mirror/nginx", "1.27"),
            **service,
        )
    ]
    noise = [
        lake.event(operation=op, time_ms=T0 + i * MINUTE, request_json=None)
        for i, op in enumerate(["GetAuthorizationToken", "BatchGetImage", "DescribeImages"] * 5)
    ]
    return ci + codebuild + release + intruder + legacy + replication + noise


def write_sample() -> dict[str, Path]:
    shutil.rmtree(ROOT, ignore_errors=True)
    written = {}
    for version in (1, 2):
        key = lake.key_for(version, name=f"demo-v{version}")
        path = ROOT / "lake" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        lake.write_object(path, sample_events(version), version)
        written[key] = path
    (ROOT / "allowlist.txt").write_text(ALLOWLIST)
    return written


def with_etags(value: Any, etags: dict[str, str]) -> Any:
    """A sample event announcing each object with its real ETag, in the JSON nested in it too
    (SQS body, SNS message); keys of plain S3 notifications are URL-encoded."""
    if isinstance(value, list):
        return [with_etags(v, etags) for v in value]
    if isinstance(value, str) and value.startswith("{"):
        return json.dumps(with_etags(json.loads(value), etags))
    if not isinstance(value, dict):
        return value
    out = {k: with_etags(v, etags) for k, v in value.items()}
    real = etags.get(unquote_plus(out["key"])) if isinstance(out.get("key"), str) else None
    for field in ("etag", "eTag"):
        if field in out and real is not None:
            out[field] = real.strip('"')
    return out


def heading(text: str) -> None:
    print(f"\n{'=' * 78}\n{text}\n{'=' * 78}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Context:
    """What Lambda passes as the context object, for a local invocation."""

    function_name = "ecr-upload-detector"
    function_version = "$LATEST"
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:ecr-upload-detector"
    memory_limit_in_mb = 1024
    aws_request_id = "demo-request"
    log_group_name = "/aws/lambda/ecr-upload-detector"
    log_stream_name = "demo"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000


def main() -> int:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the emulator's access log

    written = write_sample()
    port = free_port()
    from tests.motosafe import serialize_dynamodb

    serialize_dynamodb()  # moto's DynamoDB is not safe for the detector's parallel state calls
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 - moto's dummy credentials
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        ALLOWLIST_PARAMETER=PARAMETER,
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_LOG_LEVEL="WARNING",
        POWERTOOLS_METRICS_DISABLED="true",
    )
    try:
        return run(written)
    finally:
        server.stop()


def run(written: dict[str, Path]) -> int:
    import boto3

    from detector import handler
    from detector.analysis.output import safe_json
    from detector.app.cli import main as cli

    heading(f"Local AWS (moto) at {os.environ['AWS_ENDPOINT_URL']}: setting up")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    etags = {}
    for key, path in written.items():
        etags[key] = s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())["ETag"]
        print(f"s3://{BUCKET}/{key}")
    boto3.client("ssm").put_parameter(Name=PARAMETER, Type="String", Value=ALLOWLIST)
    print(f"SSM parameter {PARAMETER} (the allowlist):")
    print(textwrap.indent(ALLOWLIST, "    "))
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="ecr-upload-detector-findings")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="findings-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    hub = boto3.client("securityhub")
    hub.enable_security_hub()
    boto3.client("dynamodb").create_table(
        TableName=STATE_TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    os.environ["FINDINGS_TOPIC_ARN"] = topic
    os.environ["STATE_TABLE"] = STATE_TABLE
    print(f"SNS topic {topic} with queue findings-inbox subscribed; Security Hub enabled;")
    print(f"DynamoDB state table {STATE_TABLE} (exactly-once: the samples below announce the")
    print("same two objects several times, as at-least-once delivery does)")

    heading(f"$ ecr-upload-detector scan s3://{BUCKET}/aws/ --allowlist ssm:{PARAMETER}")
    code = cli(["scan", f"s3://{BUCKET}/aws/", "--allowlist", f"ssm:{PARAMETER}"])
    if code != 0:
        print(f"scan exited {code}")
        return code

    failures = 0
    # The Security Lake subscriber queue first: it is the main path, and its digest is shown.
    main_path = "sqs-security-lake-subscriber.json"
    names = sorted((p.name for p in EVENTS.glob("*.json")), key=lambda n: (n != main_path, n))
    for name in names:
        # The samples announce a placeholder ETag; every GET is pinned to the announced one.
        event = with_etags(json.loads((EVENTS / name).read_text()), etags)
        heading(f"lambda_handler(events/{name})")
        handler.reset()
        try:
            print("returned:", json.dumps(handler.lambda_handler(event, Context())))
        except Exception as exc:  # show, don't hide: the demo must say what went wrong
            failures += 1
            print(f"raised {type(exc).__name__}: {exc}")

    heading("What a person reads: the email body of the first message")
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sns import sns_backends

    sent = sns_backends[DEFAULT_ACCOUNT_ID][REGION].topics[topic].sent_notifications
    if not sent:
        print("(nothing was published)")
        return 1
    _, message, subject, attributes, _ = sent[0]
    print(f"Subject: {subject}\n")
    print(json.loads(message)["email"])
    print(
        f"({len(sent)} message(s) published in all: one per invocation that had something to "
        "say; the other samples announced objects already delivered, so they were skipped)"
    )

    heading("What a machine reads: the JSON body delivered to the subscribed queue")
    got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1)["Messages"][0]
    body = json.loads(json.loads(got["Body"])["Message"])
    print(
        f"{body['alert_count']} alert(s) from {body['finding_count']} finding(s) "
        "(Splunk groups); the first alert:"
    )
    print(safe_json(body["alerts"][0], indent=2)[:4000])
    keys = ("severity", "detection_id", "pushed", "account_ids", "regions")
    routing = {k: body[k] for k in keys if k in body}
    print("for subscription filter policies on the body:", json.dumps(routing))
    print("message attributes sent:", json.dumps(attributes), "(none: SNS drops them with JSON)")

    heading("AWS Security Hub findings, read back with GetFindings")
    for f in hub.get_findings()["Findings"]:
        fields = f.get("ProductFields", {})
        print(
            f"- {f['Title']}\n  Id {f['Id']}\n  Severity {f['Severity']['Label']}, "
            f"count {fields.get('count')}, first {f.get('FirstObservedAt')}, "
            f"last {f.get('LastObservedAt')}\n  Resources: "
            + ", ".join(r["Id"] for r in f["Resources"])
        )
    return 1 if failures else 0


if __name__ == "__main__":
    # Logs of the handler go to stdout as JSON; keep the demo readable.
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", line_buffering=True)
    raise SystemExit(main())
