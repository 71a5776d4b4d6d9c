"""Lambda entry point: ``detector.handler.lambda_handler``.

Thin on purpose: parse the notification, run the pipeline, report, answer. Everything that
talks to AWS is built once per execution environment (cold start) and reused while warm.

Importing this module loads only the logger and metrics: the detection engine (pyarrow), the
AWS adapters (boto3) and X-Ray (aws-xray-sdk, which patches botocore) are loaded by the first
invocation, which needs them. That keeps the import, and anything that imports the module
without invoking it, cheap; the first invocation pays what the import no longer does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from detector.app.settings import Settings
from detector.core.errors import DetectorError
from detector.lake import notifications

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from detector.app import pipeline
    from detector.app.sinks import Alerts
    from detector.aws.dynamodb import StateTable
    from detector.aws.s3 import S3Store
    from detector.aws.ssm import AllowlistStore
    from detector.core.spec import Active
    from detector.report.mutes import Mutes, MuteView

SERVICE = "ecr-upload-detector"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="EcrUploadDetector", service=SERVICE)

Handler = Callable[[dict[str, Any], "LambdaContext"], dict[str, Any]]


class InvocationFailed(DetectorError):
    """A direct (non-SQS) invocation failed: raised so Lambda retries it, then its
    on-failure destination receives it."""


@dataclass
class App:
    settings: Settings
    allowlists: AllowlistStore
    objects: S3Store
    alerts: Alerts
    state: StateTable | None
    # The enabled detections with their options (DETECTIONS and each detection's variables).
    active: tuple[Active, ...]
    # Security Hub workflow statuses and the mute list (MUTES_PARAMETER); None: neither.
    mutes: Mutes | None = None


_app: App | None = None


def app(context: LambdaContext) -> App:
    """The clients and settings of this execution environment, built on first use."""
    global _app
    if _app is None:
        from detector import detections
        from detector.app.sinks import Alerts
        from detector.aws.dynamodb import StateTable
        from detector.aws.s3 import S3Store
        from detector.aws.securityhub import SecurityHubPublisher, WorkflowReader
        from detector.aws.sns import SnsPublisher
        from detector.aws.ssm import AllowlistStore, MuteListStore
        from detector.report import asff
        from detector.report.mutes import Mutes

        settings = Settings.from_env()
        # Unknown slugs and bad option values fail here, naming the variable, before any
        # record is taken: a detection silently not running would be a silent gap.
        active = detections.activate(
            detections.choose(settings.detections, "DETECTIONS", in_lambda=True), os.environ
        )
        # arn:aws:lambda:<region>:<account>:function:<name>: no STS call needed for either.
        arn = context.invoked_function_arn.split(":")
        partition, region, account = arn[1], os.environ.get("AWS_REGION", arn[3]), arn[4]
        hub = SecurityHubPublisher() if settings.security_hub_enabled else None
        product = asff.product_arn(account_id=account, region=region, partition=partition)
        workflow = WorkflowReader(product) if settings.security_hub_enabled else None
        mute_list = (
            MuteListStore(settings.mutes_parameter, cache_seconds=settings.allowlist_cache_seconds)
            if settings.mutes_parameter
            else None
        )
        _app = App(
            settings,
            AllowlistStore(
                settings.allowlist_parameter,
                cache_seconds=settings.allowlist_cache_seconds,
                account_lists_path=settings.account_lists_path,
            ),
            S3Store(_lake_client(settings, region)),
            Alerts(
                SnsPublisher(settings.findings_topic_arn),
                hub,
                account_id=account,
                region=region,
                partition=partition,
                context={
                    "allowlist_parameter": settings.allowlist_parameter,
                    "function": context.function_name,
                    "region": region,
                },
            ),
            StateTable(settings.state_table) if settings.state_table else None,
            active,
            Mutes(mute_list, workflow) if workflow or mute_list else None,
        )
    return _app


def _lake_client(settings: Settings, region: str) -> Any:
    """The S3 client objects are read with: as the Security Lake subscriber (assumed role)
    when ``SUBSCRIBER_ROLE_ARN`` is set, else None (the function's own credentials)."""
    if settings.subscriber_role_arn is None:
        return None
    from detector.aws.sts import subscriber_session

    session = subscriber_session(
        settings.subscriber_role_arn, settings.subscriber_external_id, region=region
    )
    return session.client("s3")


def reset() -> None:
    """Forget the cached clients and settings (tests, or a changed environment)."""
    global _app
    _app = None


_traced: Handler | None = None


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    global _traced
    if _traced is None:  # X-Ray on the first invocation: most of what an eager import costs
        from aws_lambda_powertools import Tracer

        _traced = Tracer(service=SERVICE).capture_lambda_handler(_handle)
    return _traced(event, context)


def _handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from detector.app import pipeline

    a = app(context)
    try:
        batch = notifications.parse(event)
    except notifications.UnknownEvent as exc:
        logger.error("unknown event", extra={"error": str(exc)})
        raise
    outcome = pipeline.process(
        batch,
        a.allowlists,
        a.objects,
        a.alerts,
        state=a.state,
        window_seconds=a.settings.dedup_window_minutes * 60,
        time_left_ms=context.get_remaining_time_in_millis,
        active=a.active,
        mutes=a.mutes,
    )
    _report(outcome, a.active)
    if batch.from_sqs:
        # Partial batch response: only the failed records come back to the queue.
        return {"batchItemFailures": [{"itemIdentifier": i.id} for i in outcome.failed]}
    if outcome.failed:
        raise InvocationFailed("; ".join(outcome.errors))
    return {
        "objects": outcome.objects,
        "findings": len(outcome.findings),
        "alerts": len(outcome.alerts),
        "alerted": outcome.alerted,
        "already_processed": len(outcome.duplicates),
    }


def _report(outcome: pipeline.Outcome, active: Sequence[Active] = ()) -> None:
    for skipped in outcome.skipped:
        logger.info("skipped", extra={"reason": skipped})
    for uri in outcome.duplicates:
        logger.info("already processed, skipped", extra={"object": uri})
    for missing in outcome.missing:
        logger.warning("object gone before it was read, not retried", extra={"error": missing})
    for error in outcome.errors:
        logger.error("failed", extra={"error": error})
    for finding_id, why in outcome.rejected:
        # The email went out anyway; the alarm on SecurityHubRejected points here.
        logger.error(
            "Security Hub rejected a finding", extra={"finding_id": finding_id, "error": why}
        )
    for miss in outcome.undelivered:
        # The email went out anyway; the alarm on SecurityHubUndelivered points here. retried:
        # the item fails so Lambda retries it for Security Hub alone; else given up.
        logger.error(
            "Security Hub did not get a finding",
            extra={
                "alert_id": miss.alert_id,
                "finding_id": miss.finding_id,
                "error": miss.why,
                "retried": miss.retried,
            },
        )
    view = outcome.mutes
    if view is not None:
        _report_mutes(view)
    for name, value in (
        ("ObjectsScanned", outcome.objects),
        ("RowsScanned", outcome.rows),
        ("Findings", len(outcome.findings)),
        ("Alerts", len(outcome.alerts)),
        ("SecurityHubRejected", len(outcome.rejected)),
        ("SecurityHubUndelivered", len(outcome.undelivered)),
        ("ItemsFailed", len(outcome.failed)),
        ("ObjectsSkipped", len(outcome.skipped)),
        ("ObjectsDuplicate", len(outcome.duplicates)),
        ("ObjectsMissing", len(outcome.missing)),
        ("Alerted", outcome.alerted),
        ("AlertsSuppressed", outcome.suppressed),
        ("AlertsMuted", len(view.muted) if view else 0),
        ("SecurityHubWorkflowUnread", view.unread if view else 0),
        ("MuteListFailed", int(view.list_failed) if view else 0),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    for a in active:
        # One metric per detection (e.g. UntrustedPutImage): the rows it reported.
        if a.detection.metric:
            value = outcome.kept.get(a.detection.id, 0)
            metrics.add_metric(name=a.detection.metric, unit=MetricUnit.Count, value=value)
    logger.info(
        "invocation done",
        extra={
            "objects": outcome.objects,
            "rows": outcome.rows,
            "findings": len(outcome.findings),
            "alerts": len(outcome.alerts),
            "security_hub_rejected": len(outcome.rejected),
            "security_hub_undelivered": len(outcome.undelivered),
            "failed_items": len(outcome.failed),
            "published": outcome.published,
            "alerted": outcome.alerted,
            "suppressed_by_dedup_window": outcome.suppressed,
            "muted": len(view.muted) if view else 0,
        },
    )


def _report_mutes(view: MuteView) -> None:
    """One line per muted alert, per expired mute that would have muted one, and per mute
    check that failed (its alerts were emailed as if not muted)."""
    from detector.report.mutes import when

    for m in view.muted:
        extra: dict[str, Any] = {"alert_id": m.alert_id, "principal": m.principal[:300]}
        extra["muted_by"] = m.mute.by
        if m.mute.entry is not None:
            extra |= {"until": m.mute.entry.until.isoformat(), "why": m.mute.entry.why}
            extra["entry"] = f"{m.mute.entry.source} line {m.mute.entry.line}"
        else:
            extra["workflow_status"] = "SUPPRESSED"
        logger.info("alert muted, not emailed", extra=extra)
    for alert_id, entry in view.expired:
        logger.info(
            f"mute expired at {when(entry.until)}: no longer mutes",
            extra={
                "alert_id": alert_id,
                "principal": entry.principal,
                "until": entry.until.isoformat(),
                "why": entry.why,
                "entry": f"{entry.source} line {entry.line}",
            },
        )
    for alert_id in sorted(view.reopened):
        logger.info(
            "Security Hub finding RESOLVED: its alert window ended, this is a new alert",
            extra={"alert_id": alert_id},
        )
    for problem in view.problems:
        logger.error("mute check failed, emailed as if not muted", extra={"error": problem})
