"""The commands that query Athena: ``athena-sql`` (print the statements), ``backfill`` (run
them, print the findings and publish them: Security Hub, then the SNS digest, against the
Lambda's state table when given) and ``suggest-allowlist`` (who pushed images, from objects or
an Athena query).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from detector import detections
from detector.analysis import athena_results, athena_sql, suggest
from detector.analysis.findings import Finding
from detector.app.cli_common import (
    EXIT_OK,
    UsageError,
    _actives,
    _load_allowlist,
    _partial,
    _report_unread,
    _warn_empty,
    _write,
)
from detector.app.cli_scan import _partitions, _scan_paths
from detector.core.allowlist import Allowlist
from detector.core.spec import Active
from detector.report.alerts import Alert, rollup

if TYPE_CHECKING:
    from detector.app.ports import StateStore
    from detector.app.sinks import Alerts
    from detector.aws.athena import QueryStatus


# --- Athena ----------------------------------------------------------------------------------


def _query(args: argparse.Namespace) -> athena_sql.Query:
    """The query options, validated (a bad one is a usage error, exit 2)."""
    missing = [
        f"--{name.replace('_', '-')}"
        for name in ("region", "source_version", "start", "end")
        if not getattr(args, name)
    ]
    if missing:
        raise UsageError(f"{', '.join(missing)} required")
    return athena_sql.Query(
        athena_sql.check_region(args.region),
        athena_sql.parse_version(args.source_version),
        athena_sql.Period.parse(args.start, args.end),
        athena_sql.parse_accounts(args.accounts),
    )


def athena_sql_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    active = _actives(args)
    allowlist = _load_allowlist(args.allowlist)
    query = _query(args)
    _warn_empty(allowlist, args.allowlist, active, err)
    statements = [athena_sql.build(query, allowlist, one) for one in active]
    if len(active) == 1:
        out.write(statements[0] + "\n")
    else:
        out.write(
            "\n".join(
                f"-- {one.detection.slug}: {one.detection.name}\n{sql}\n"
                for one, sql in zip(active, statements, strict=True)
            )
        )
    err.write(
        f"-- {query.database}.{query.table}, {query.period.describe()}. "
        "firstTime/lastTime are epoch milliseconds (UTC).\n"
    )
    return EXIT_OK


class QueryProgress:
    """The query's state, time so far and bytes scanned on one stderr line; only on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.start = time.monotonic()
        self.shown = False

    def __call__(self, status: QueryStatus) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        self.stream.write(
            f"\rAthena {status.query_id[:8]}: {status.state}, {elapsed:,.0f} s, "
            f"{athena_results.human_bytes(status.scanned_bytes)} scanned\x1b[K"
        )
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.shown = False


@dataclass
class AthenaRun:
    """One detection's query."""

    query: athena_sql.Query
    query_id: str
    scanned_bytes: int
    findings: list[Finding]
    detection: str = detections.DEFAULT


@dataclass
class Backfill:
    """The queries of one backfill (one per detection) and their findings together."""

    query: athena_sql.Query
    runs: list[AthenaRun]

    @property
    def findings(self) -> list[Finding]:
        return [f for run in self.runs for f in run.findings]

    @property
    def scanned_bytes(self) -> int:
        return sum(run.scanned_bytes for run in self.runs)

    @property
    def query_ids(self) -> str:
        return ", ".join(run.query_id for run in self.runs)

    def inputs(self) -> dict[str, Any]:
        """The ``athena`` object of the JSON document: as before for one query; with several,
        totals and a ``queries`` list (the detection, id, bytes and cost of each)."""
        query = self.query
        first = self.runs[0]
        info: dict[str, Any] = {
            "query_id": first.query_id if len(self.runs) == 1 else None,
            "table": f"{query.database}.{query.table}",
            "start": f"{query.period.start:%Y-%m-%dT%H:%M:%SZ}",
            "end": f"{query.period.end:%Y-%m-%dT%H:%M:%SZ}",
            "accounts": list(query.accounts),
            "scanned_bytes": self.scanned_bytes,
            "cost_usd": round(sum(athena_results.cost_usd(r.scanned_bytes) for r in self.runs), 6),
        }
        if len(self.runs) > 1:
            info["queries"] = [
                {
                    "detection": r.detection,
                    "query_id": r.query_id,
                    "scanned_bytes": r.scanned_bytes,
                    "cost_usd": round(athena_results.cost_usd(r.scanned_bytes), 6),
                }
                for r in self.runs
            ]
        return info


def _check_output(output: str | None) -> None:
    if output is not None and not output.startswith("s3://"):
        raise UsageError(f"--output {output[:80]!r} is not an s3:// location")


def _run_athena(
    query: athena_sql.Query,
    allowlist: Allowlist,
    args: argparse.Namespace,
    err: TextIO,
    active: Active | None = None,
    sql: str | None = None,
) -> AthenaRun:
    """Run one detection (None: the default) in Athena and read its findings; ``QueryFailed``
    if it does not end."""
    from detector.aws.athena import AthenaQueries, QueryFailed  # boto3 only when asked for

    if not args.workgroup:
        raise UsageError("--workgroup required")
    _check_output(args.output)
    active = active or detections.default()[0]
    detection = active.detection
    if sql is None:
        sql = athena_sql.build(query, allowlist, active)
    athena = AthenaQueries(query.region)
    which = "" if detection.slug == detections.DEFAULT else f" ({detection.slug})"
    err.write(f"Athena{which}: {query.database}.{query.table}, {query.period.describe()}\n")
    query_id = athena.start(sql, workgroup=args.workgroup, output=args.output)
    progress = QueryProgress(err)
    try:
        status = athena.wait(query_id, progress)
    except KeyboardInterrupt:
        progress.done()
        athena.stop(query_id)  # a query left running goes on costing money
        err.write(f"Athena query {query_id} cancelled\n")
        raise
    except QueryFailed as exc:
        progress.done()
        if exc.status.state == "CANCELLED" and exc.status.scanned_bytes:
            err.write(athena_results.cost_line(exc.status.scanned_bytes) + " (billed)\n")
        raise
    progress.done()
    err.write(
        f"Athena query {query_id} succeeded. {athena_results.cost_line(status.scanned_bytes)}\n"
    )
    result = athena.results(query_id)
    athena_results.check_columns(result.columns, detection)
    found = athena_results.findings(result.rows, detection)
    return AthenaRun(query, query_id, status.scanned_bytes, found, detection.slug)


def backfill(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    active = _actives(args)
    allowlist = _load_allowlist(args.allowlist)
    query = _query(args)
    if not args.dry_run and not args.topic_arn and not args.security_hub:
        raise UsageError(
            "nothing to publish to: give --topic-arn, leave --security-hub on, or use --dry-run"
        )
    if args.topic_arn is not None and not args.topic_arn.startswith("arn:"):
        raise UsageError(f"--topic-arn {args.topic_arn[:80]!r} is not an SNS topic ARN")
    _warn_empty(allowlist, args.allowlist, active, err)
    # Every statement is built (and checked) before the first query costs anything.
    statements = [athena_sql.build(query, allowlist, one) for one in active]
    run = Backfill(
        query,
        [
            _run_athena(query, allowlist, args, err, one, sql)
            for one, sql in zip(active, statements, strict=True)
        ],
    )
    if len(run.runs) > 1:
        err.write(
            f"{len(run.runs)} Athena queries: {athena_results.human_bytes(run.scanned_bytes)} "
            f"scanned, about ${run.inputs()['cost_usd']:.4f} in all\n"
        )
    _write(run.findings, args.format, out, active, athena=run.inputs())
    if args.dry_run:
        err.write(f"dry run: {len(run.findings)} finding(s), nothing published\n")
        return EXIT_OK
    if not run.findings:
        err.write("no findings: nothing to publish\n")
        return EXIT_OK
    _publish(run, args, err)
    return EXIT_OK


def _publish(run: Backfill, args: argparse.Namespace, err: TextIO) -> None:
    """Security Hub, then the SNS digest: the Lambda's order, through the same ``Alerts``."""
    from detector.app.sinks import Alerts
    from detector.aws import regional
    from detector.aws.sns import SnsPublisher

    region = run.query.region
    who = regional.caller(region)
    context = {
        "run": "backfill",
        "table": f"{run.query.database}.{run.query.table}",
        "period": run.query.period.describe(),
        "athena_query": run.query_ids,
    }
    if args.allowlist.startswith("ssm:"):
        context["allowlist_parameter"] = args.allowlist.removeprefix("ssm:")
    alerts = Alerts(
        # Without a topic, nothing is ever sent through this publisher (see below).
        regional.sns_publisher(args.topic_arn) if args.topic_arn else SnsPublisher(""),
        regional.security_hub_publisher(region) if args.security_hub else None,
        account_id=who.account_id,
        region=region,
        partition=who.partition,
        context=context,
    )
    rolled = rollup(run.findings)
    if args.state_table:
        state = regional.state_table(args.state_table, region)
        hub, mailed, held, rejected = _publish_with_state(
            rolled, alerts, state, args.dedup_window_minutes * 60, bool(args.topic_arn)
        )
    else:
        report = alerts.security_hub(rolled)
        if args.topic_arn:
            alerts.notify(rolled)
        hub, mailed, held = report.imported, len(rolled), 0
        rejected = report.rejected
    for fid, why in rejected:
        err.write(f"Security Hub rejected {fid}: {why}\n")
    parts = []
    if args.security_hub:
        parts.append(f"{hub} alert(s) imported into Security Hub ({region})")
        if rejected:
            parts.append(f"{len(rejected)} rejected by Security Hub")
    if args.topic_arn:
        parts.append(
            f"{mailed} alert(s) in the SNS message" + (f", {held} held back" if held else "")
        )
    err.write("published: " + "; ".join(parts) + "\n")


def _publish_with_state(
    rolled: list[Alert],
    alerts: Alerts,
    state: StateStore,
    window_seconds: int,
    notify: bool,
) -> tuple[int, int, int, list[tuple[str, str]]]:
    """Publish against the Lambda's state table; (imported, mailed, held back by the window,
    rejected by Security Hub).

    A backfill has no objects, so it cannot add to the per-object cumulative totals without
    counting events the Lambda already counted: the totals are left alone. Alert keys the
    Lambda already tracks keep their (cumulative) Security Hub finding; the others are
    imported. The email uses the Lambda's alert window: a key emailed within the window is
    not mailed again unless it escalates, and one that could not be mailed is not marked.
    """
    from detector.app.delivery import notify_due

    fresh = [a for a in rolled if state.totals(a.id).count == 0]
    report = alerts.security_hub(fresh)
    if not notify:
        return report.imported, 0, 0, report.rejected
    sent = notify_due(rolled, alerts, state, window_seconds)
    return report.imported, len(sent), len(rolled) - len(sent), report.rejected


# --- suggest-allowlist -----------------------------------------------------------------------


def suggest_allowlist(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.from_athena and args.paths:
        raise UsageError("give PATHs or --from-athena, not both")
    if not args.from_athena and not args.paths:
        raise UsageError("give PATHs to read, or --from-athena with the query options")
    nobody = Allowlist.of([], source="(none: every push is listed)")
    problems: list[str] = []
    notes: list[str] = []
    read = 0
    if args.from_athena:
        query = _query(args)
        run = _run_athena(query, nobody, args, err)
        findings = run.findings
        source = f"Athena {query.database}.{query.table}, {query.period.describe()}"
        if query.accounts:
            source += f", accounts {', '.join(query.accounts)}"
    else:
        partitions = _partitions(
            args.start,
            args.end,
            [args.region] if args.region else None,
            [args.accounts] if args.accounts else None,
            ("--start", "--end", "--region", "--accounts"),
        )
        scanned, problems = _scan_paths(args.paths, nobody, err, partitions=partitions)
        findings = scanned.findings()
        read = scanned.objects
        source = ", ".join(args.paths)
        if not read:  # nothing read: no suggestion (an empty one would trust no one, say nothing)
            return _report_unread(problems, read, err)
        if problems:
            notes.append(_partial(read, problems, "this list is"))
    suggestions = suggest.suggest(findings)
    left_out: list[suggest.Suggestion] = []
    if not args.include_failed:
        suggestions, left_out = suggest.split_failed(suggestions)
    out.write(suggest.render(suggestions, source=source, left_out=left_out, notes=notes))
    if left_out:
        calls = "/".join(detections.get(detections.DEFAULT).operations)
        err.write(
            f"note: {len(left_out)} principal(s) left out: no {calls} call of theirs succeeded "
            "(--include-failed lists them)\n"
        )
    return _report_unread(problems, read, err)
