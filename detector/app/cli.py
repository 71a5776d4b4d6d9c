"""``ecr-upload-detector``: the command line.

- ``scan``: exit 0 every input was read (findings or not); 1 some inputs could not be read (each
  named on stderr, the rest still scanned and reported, "k of N inputs read"); 2 usage error
  (bad arguments, unreadable allowlist); 3 no input could be read: nothing was scanned, so there
  is no result (no "no findings" line either). ``--since``/``--until``/``--region``/``--account``
  list only those ``region=/accountId=/eventDay=`` partitions of a directory or S3 prefix.
- ``athena-sql``: print each detection as one Athena (Trino) statement; 0, or 2 on usage errors.
- ``backfill``: run those statements in Athena (one query per detection), print the findings and
  publish them (Security Hub, then the SNS digest) unless ``--dry-run``; 0 ok, 1 a query failed
  or was cancelled (with Athena's reason) or publishing failed, 2 usage error.
- ``suggest-allowlist``: who pushed images (from objects or an Athena query), in the allowlist
  format for a person to review; exit codes as ``scan`` (or ``backfill`` with ``--from-athena``).
- ``detections``: list the detections (``--detection``) and their options (``--option``); 0.

Every command: 130 when interrupted (``EXIT_CODES``, shown by ``--help``).

``scan``, ``athena-sql`` and ``backfill`` run the detections named with ``--detection SLUG``
(repeatable; default ``ecr-upload-unknown-user``), with options from the environment and
``--option NAME=VALUE`` (which wins). An unknown slug or option, or a bad value, is exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from detector import __version__, detections
from detector.analysis import athena_sql
from detector.analysis.output import safe_text
from detector.app.cli_athena import athena_sql_command, backfill, suggest_allowlist
from detector.app.cli_common import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREAD, EXIT_USAGE, UsageError
from detector.app.cli_scan import scan
from detector.core.errors import AllowlistInvalid, ConfigError, DetectorError

# Shown by --help (the top level and scan, suggest-allowlist) and in docs/backfill.md.
EXIT_CODES = """\
exit status:
  0    every input was read (with findings or without: the output says which)
  1    some inputs could not be read: each is named on stderr, the findings are of
       the rest ("k of N inputs read"); backfill: an Athena query or publishing
       failed; any command: an internal error (one line on stderr)
  2    usage error: bad arguments, an unreadable or invalid allowlist
  3    no input could be read (scan, suggest-allowlist): nothing was scanned, so
       there is no result, and no "no findings" line
  130  interrupted
"""


class _Help(argparse.HelpFormatter):
    """Descriptions wrapped as usual; the exit status table (``EXIT_CODES``) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("exit status:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ecr-upload-detector",
        description="Run detections over Amazon Security Lake CloudTrail data (OCSF, both source "
        f"versions). By default {detections.DEFAULT}: Amazon ECR image pushes by principals not "
        "on an allowlist; the detections command lists the others.",
        epilog=EXIT_CODES,
        formatter_class=_Help,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    scan = sub.add_parser(
        "scan",
        help="scan Security Lake Parquet objects and print findings",
        description="Scan Parquet objects: files, directories (searched recursively for "
        "*.parquet) or s3://bucket/prefix. --since/--until/--region/--account read only those "
        "Security Lake partitions (region=R/accountId=A/eventDay=YYYYMMDD/) of a directory or "
        "prefix.",
        epilog=EXIT_CODES,
        formatter_class=_Help,
    )
    scan.add_argument("paths", nargs="+", metavar="PATH")
    scan.add_argument(
        "--allowlist",
        metavar="FILE",
        help="trusted principals: one ARN or glob per line (# comments), commas, or a JSON array; "
        "an empty file trusts no one. ssm:NAME reads an SSM parameter instead. Required by the "
        "detections that use it (the default does)",
    )
    scan.add_argument("--format", choices=("table", "jsonl", "json"), default="table")
    _detection_options(scan, "")
    scan.add_argument(
        "--since",
        metavar="TIME",
        help="only the eventDay partitions from this day on: a date (2026-08-01) or a UTC "
        "date-time (2026-08-01T06:00:00Z). Partitions are whole days: every event of a day "
        "chosen is read",
    )
    scan.add_argument(
        "--until",
        metavar="TIME",
        help="only the eventDay partitions up to this day: a date includes that day; a "
        "date-time is an end excluded (2026-08-02T00:00:00Z: up to the 1st)",
    )
    scan.add_argument(
        "--region",
        action="append",
        metavar="REGION",
        help="only the region=REGION partitions (repeatable, or comma-separated)",
    )
    scan.add_argument(
        "--account",
        action="append",
        metavar="ID",
        help="only the accountId=ID partitions, 12-digit account ids (repeatable, or "
        "comma-separated)",
    )

    sql = sub.add_parser(
        "athena-sql",
        help="print each detection as one Athena (Trino) SQL statement",
        description="Print the detection over the Security Lake CloudTrail table of one source "
        "version as one Athena SQL statement. firstTime/lastTime are epoch milliseconds (UTC). "
        "With several --detection, one statement each, each after a '-- SLUG: NAME' line and "
        "separated by a blank line.",
    )
    sql.add_argument("--allowlist", required=True, metavar="FILE", help=_ALLOWLIST_HELP)
    _query_options(sql, required=True)
    _detection_options(sql, _PER_STATEMENT)

    backfill = sub.add_parser(
        "backfill",
        help="run the detections over history in Athena and publish the findings",
        description="Run the detection over a period of Security Lake history with Athena, print "
        "the findings like scan, and publish them (Security Hub, then one SNS digest) unless "
        "--dry-run. Athena bills the bytes the query scans: the cost is printed. Several "
        "--detection run one query each, and their findings are published together.",
    )
    backfill.add_argument("--allowlist", required=True, metavar="FILE", help=_ALLOWLIST_HELP)
    _query_options(backfill, required=True)
    _athena_options(backfill, required=True)
    _detection_options(backfill, _PER_STATEMENT)
    backfill.add_argument(
        "--dry-run", action="store_true", help="print the findings, publish nothing"
    )
    backfill.add_argument("--topic-arn", metavar="ARN", help="SNS topic for the digest")
    backfill.add_argument(
        "--security-hub",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="import the findings into Security Hub in --region (default: on)",
    )
    backfill.add_argument(
        "--state-table",
        metavar="TABLE",
        help="the Lambda's DynamoDB state table (in --region): no email for keys alerted within "
        "the dedup window, no Security Hub re-import of keys the Lambda already tracks",
    )
    backfill.add_argument(
        "--dedup-window-minutes",
        type=int,
        default=60,
        metavar="N",
        help="with --state-table: the Lambda's DEDUP_WINDOW_MINUTES (default 60)",
    )
    backfill.add_argument("--format", choices=("table", "jsonl", "json"), default="table")

    sug = sub.add_parser(
        "suggest-allowlist",
        help="list who pushed images, in the allowlist format, for review",
        description="Every principal that pushed images (the calls the default detection "
        "watches) in the objects given, or in an Athena query with --from-athena: roles for "
        "assumed-role sessions, AWS services for calls they made, most pushes first, with # "
        "comments. Principals none of whose pushes succeeded are left out (counted) unless "
        "--include-failed. With PATHs, --start/--end/--region/--accounts read only those "
        "partitions, as scan's --since/--until/--region/--account do. Review before use.",
        epilog=EXIT_CODES,
        formatter_class=_Help,
    )
    sug.add_argument("paths", nargs="*", metavar="PATH")
    sug.add_argument(
        "--include-failed",
        action="store_true",
        help="also list principals none of whose pushes succeeded (only attempts), marked",
    )
    sug.add_argument(
        "--from-athena",
        action="store_true",
        help="query Athena instead of reading objects (needs the query options below)",
    )
    _query_options(sug, required=False)
    _athena_options(sug, required=False)

    sub.add_parser(
        "detections",
        help="list the detections and their options",
        description="One line per detection, tab-separated: slug, id, name, severity, whether it "
        "runs by default, its options (environment variable=default value), then its ESCU type "
        "(TTP, Anomaly, Hunting), its shape (filter, request, time, threshold, window), the "
        "ESCU version ported, and whether the Lambda runs it with this environment's "
        "DETECTIONS (lambda: on/off).",
    )
    test = sub.add_parser(
        "test",
        help="run detections' examples (and records from a file) and say which pass",
        description="Write each example of each detection named (all by default; slugs or "
        "all, ttp, anomaly, hunting) as a Security Lake object of v2 and of v1 (request "
        "flattened, and whole), scan it and print PASS or FAIL per example. --records adds "
        "the records of a JSON file: a raw CloudTrail record, an OCSF v1 or v2 record, a list "
        'of them, or cases {"name", "detection", "reported", "record" or '
        '"records"}; a bare record is expected to be reported.',
        epilog="exit status: 0 every case passed; 1 a case failed; 2 usage (an unknown slug, a "
        "records file that cannot be read)",
        formatter_class=_Help,
    )
    test.add_argument("slugs", nargs="*", metavar="SLUG")
    test.add_argument("--records", metavar="FILE", help="a JSON file of records to test")
    test.add_argument(
        "--no-examples", action="store_true", help="only the records, not the specs' examples"
    )
    return p


# Statements are not combined: each detection is its own query, billed on its own.
_PER_STATEMENT = (
    " Each detection is its own statement (one Athena query each, billed on its own: the bytes "
    "it scans, at least 10 MB)."
)


def _detection_options(p: argparse.ArgumentParser, note: str) -> None:
    p.add_argument(
        "--detection",
        action="append",
        metavar="SLUG",
        help=f"a detection to run (repeatable; default {detections.DEFAULT}; the detections "
        f"command lists them).{note}",
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="NAME=VALUE",
        help="an option of a detection run, named by its environment variable (repeatable; the "
        "detections command lists them); wins over "
        "that variable in the environment",
    )


_ALLOWLIST_HELP = (
    "trusted principals: one ARN or glob per line (# comments), commas, or a JSON array; "
    "ssm:NAME reads an SSM parameter instead"
)


def _query_options(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument(
        "--region",
        required=required,
        help="the Security Lake region whose Glue database is queried, e.g. us-east-1",
    )
    p.add_argument(
        "--source-version",
        required=required,
        metavar="1|2",
        help="Security Lake source version: 1 (OCSF 1.0.0-rc.2) or 2 (OCSF 1.1.0)",
    )
    p.add_argument(
        "--start",
        required=required,
        metavar="TIME",
        help="start, included: a date (2026-08-01) or a UTC date-time (2026-08-01T06:00:00Z)",
    )
    p.add_argument(
        "--end",
        required=required,
        metavar="TIME",
        help="end: a date includes that whole day; a date-time is excluded",
    )
    p.add_argument(
        "--accounts", metavar="A,B", help="only these 12-digit account ids (a partition column)"
    )


def _athena_options(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--workgroup", required=required, metavar="WG", help="Athena workgroup")
    p.add_argument(
        "--output",
        metavar="S3URI",
        help="s3://bucket/prefix/ for Athena's result files (unless the workgroup sets one)",
    )


# --- detections ------------------------------------------------------------------------------


def list_detections(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    chosen = os.environ.get("DETECTIONS", "")
    try:
        enabled = set(detections.parse_slugs(chosen, in_lambda=True))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    for slug, detection in detections.registry().items():
        options = ", ".join(f"{opt.env}={opt.default}" for opt in detection.options)
        fields = (
            slug,
            detection.id,
            detection.name,
            detection.severity,
            "default" if slug == detections.DEFAULT else "optional",
            f"options: {options or 'none'}",
            # Added after the stable columns.
            detection.escu_type,
            detection.kind,
            f"v{detection.version}",
            f"lambda: {'on' if slug in enabled else 'off'}",
        )
        out.write("\t".join(safe_text(f, 500) for f in fields) + "\n")
    return EXIT_OK


def test_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run the examples and records; 1 when any case failed."""
    import json

    from detector.analysis import selftest
    from detector.lake import records

    try:
        slugs = detections.choose(args.slugs or ["all"], "SLUG")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    cases: list[selftest.Case] = []
    if not args.no_examples:
        for slug in slugs:
            detection = detections.get(slug)
            cases += [selftest.example_case(detection, e) for e in detection.examples]
    if args.records:
        try:
            data = json.loads(Path(args.records).read_text(encoding="utf-8"))
            cases += selftest.record_cases(data, slugs, Path(args.records).name)
        except (OSError, ValueError, RecursionError, records.RecordInvalid, ConfigError) as exc:
            raise UsageError(f"--records {args.records}: {exc}") from None
    if not cases:
        raise UsageError("nothing to test: no examples and no --records")
    failed = 0
    for case in cases:
        result = selftest.run(case)
        failed += not result.passed
        out.write(safe_text(selftest.render(result), 2000) + "\n")
    out.write(f"{len(cases) - failed} passed, {failed} failed\n")
    return EXIT_OK if failed == 0 else EXIT_UNREAD


COMMANDS = {
    "scan": scan,
    "athena-sql": athena_sql_command,
    "backfill": backfill,
    "suggest-allowlist": suggest_allowlist,
    "detections": list_detections,
    "test": test_command,
}


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage message
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return COMMANDS[args.command](args, out, err)
    except (UsageError, AllowlistInvalid, athena_sql.QueryInputInvalid) as exc:
        err.write(f"error: {safe_text(exc, 2000)}\n")  # may quote hostile data
        return EXIT_USAGE
    except DetectorError as exc:
        err.write(f"error: {safe_text(exc, 2000)}\n")
        return EXIT_UNREAD
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # the last boundary: a bug is reported in one line, not a traceback
        err.write(
            f"internal error: {type(exc).__name__}: {safe_text(exc, 500)} "
            "(please report it with the command line)\n"
        )
        return EXIT_UNREAD
