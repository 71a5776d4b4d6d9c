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
import functools
import io
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO

from detector import __version__, detections
from detector.analysis import athena_sql, suggest
from detector.analysis.engine import Run, scan_object
from detector.analysis.findings import Finding
from detector.analysis.output import safe_text, write_json, write_jsonl, write_table
from detector.core.allowlist import Allowlist
from detector.core.errors import (
    AllowlistInvalid,
    AllowlistUnavailable,
    BadObject,
    ConfigError,
    DetectorError,
    ObjectUnreadable,
)
from detector.core.objects import ObjectRef, is_data_key
from detector.core.spec import Active
from detector.report.alerts import Alert, rollup

if TYPE_CHECKING:
    from detector.app.pipeline import StateStore
    from detector.app.sinks import Alerts
    from detector.aws.athena import QueryStatus
    from detector.aws.s3 import S3Store

EXIT_OK, EXIT_UNREAD, EXIT_USAGE, EXIT_NOTHING_READ, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

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


class UsageError(Exception):
    pass


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


def _load_allowlist(spec: str) -> Allowlist:
    if spec.startswith("ssm:"):
        from detector.aws.ssm import AllowlistStore  # boto3 only when SSM is asked for

        try:
            return AllowlistStore(spec.removeprefix("ssm:")).get()
        except AllowlistUnavailable as exc:
            raise UsageError(f"cannot read allowlist: {exc}") from exc
    try:
        text = Path(spec).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read allowlist {spec}: {exc.__class__.__name__}: {exc}") from exc
    return Allowlist.parse(text, source=spec)


def _actives(args: argparse.Namespace, environ: dict[str, str] | None = None) -> tuple[Active, ...]:
    """The detections asked for (``--detection``), with their options from the environment
    and ``--option`` (which wins). An unknown slug, an option of no detection asked for, or a
    bad value is a usage error naming it."""
    try:
        slugs = detections.choose(args.detection or [detections.DEFAULT])
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    env = dict(os.environ if environ is None else environ)
    known = {opt.env for slug in slugs for opt in detections.get(slug).options}
    for item in args.option or ():
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"--option {item[:80]!r} is not NAME=VALUE")
        if name not in known:
            offered = ", ".join(sorted(known)) or "none"
            raise UsageError(
                f"--option {name[:80]!r} is not an option of the detection(s) run "
                f"({', '.join(slugs)}; their options: {offered})"
            )
        env[name] = value
    try:
        # Parses each option and checks them together (``Detection.check_options``).
        return detections.activate(slugs, env)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _warn_empty(allowlist: Allowlist, spec: str, active: Sequence[Active], err: TextIO) -> None:
    """Warn when an empty allowlist makes a detection report every call it watches."""
    if not allowlist.empty:
        return
    for one in active:
        if athena_sql.reports_every_call(one, allowlist):
            calls = "/".join(one.detection.operations)
            err.write(
                f"warning: allowlist {spec} is empty: every {calls} call is reported "
                f"({one.detection.slug})\n"
            )


# --- partitions --------------------------------------------------------------------------------

_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_DAY = re.compile(r"[0-9]{8}")


@dataclass(frozen=True)
class Partitions:
    """The Security Lake partitions asked for (``--since``/``--until``/``--region``/
    ``--account``): the ``region=R/accountId=A/eventDay=YYYYMMDD/`` folders of a key.

    A key is in them when it names each partition asked about, with a value asked for; nothing
    asked: every key. Folder names compare case-insensitively, values exactly.
    """

    regions: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()
    first_day: str | None = None  # eventDay, yyyymmdd, included
    last_day: str | None = None  # included

    @property
    def asked(self) -> bool:
        return bool(self.regions or self.accounts or self.first_day or self.last_day)

    def _tests(self) -> dict[str, Callable[[str], bool]]:
        tests: dict[str, Callable[[str], bool]] = {}
        if self.regions:
            tests["region"] = self.regions.__contains__
        if self.accounts:
            tests["accountid"] = self.accounts.__contains__
        if self.first_day or self.last_day:
            first, last = self.first_day or "00000000", self.last_day or "99999999"
            tests["eventday"] = lambda day: bool(_DAY.fullmatch(day)) and first <= day <= last
        return tests

    def _judge(self, folders: Sequence[str]) -> bool | None:
        """False: a folder is outside; True: every partition asked about is named, inside;
        None: not decided yet (some are not named)."""
        tests = self._tests()
        named = set()
        for folder in folders:
            name, sep, value = folder.partition("=")
            test = tests.get(name.lower()) if sep else None
            if test is None:
                continue
            if not test(value):
                return False
            named.add(name.lower())
        return True if named == set(tests) else None

    def keeps(self, key: str) -> bool:
        """An object's key (a path or an S3 key) is in the partitions asked for."""
        return not self.asked or self._judge(key.split("/")[:-1]) is True

    def folder(self, prefix: str) -> bool | None:
        """For ``S3Store.list``: skip the folder ``prefix`` (False: outside, or Iceberg
        metadata), list all of it (True: inside) or look into it (None: not decided)."""
        folders = prefix.rstrip("/").split("/")
        if folders[-1] == "metadata":
            return False
        return self._judge(folders)

    def describe(self) -> dict[str, Any]:
        """What was asked, for the JSON document's ``inputs``."""
        return {
            "first_day": self.first_day,
            "last_day": self.last_day,
            "regions": sorted(self.regions),
            "accounts": sorted(self.accounts),
        }


def _values(items: Sequence[str] | None) -> list[str]:
    """Values of a repeatable option, each also comma-separated."""
    return [v.strip() for item in items or () for v in item.split(",") if v.strip()]


def _partitions(
    since: str | None,
    until: str | None,
    regions: Sequence[str] | None,
    accounts: Sequence[str] | None,
    names: tuple[str, str, str, str] = ("--since", "--until", "--region", "--account"),
) -> Partitions:
    """The partitions asked for; a bad value is a usage error naming its option."""
    first = athena_sql._parse_time(since, names[0], end=False) if since else None
    after = athena_sql._parse_time(until, names[1], end=True) if until else None
    if first is not None and after is not None and after <= first:
        raise UsageError(f"{names[1]} ({after:%Y-%m-%dT%H:%M:%SZ}) is not after {names[0]}")
    for account in _values(accounts):
        if not _ACCOUNT_ID.fullmatch(account):
            raise UsageError(f"{names[3]} {account[:40]!r} is not a 12-digit AWS account id")
    for region in _values(regions):
        try:
            athena_sql.check_region(region)
        except athena_sql.QueryInputInvalid:
            raise UsageError(
                f"{names[2]} {region[:40]!r} is not an AWS region name (us-east-1)"
            ) from None
    return Partitions(
        regions=frozenset(_values(regions)),
        accounts=frozenset(_values(accounts)),
        first_day=f"{first:%Y%m%d}" if first is not None else None,
        last_day=f"{after - timedelta(milliseconds=1):%Y%m%d}" if after is not None else None,
    )


class Listing:
    """Folders and objects listed so far, on one stderr line; silent unless a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.folders = 0
        self.objects = 0
        self.last = 0.0
        self.shown = False

    def update(self, folders: int = 0, objects: int = 0) -> None:
        self.folders += folders
        self.objects += objects
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        self.stream.write(
            f"\rlisting: {self.folders:,} folder(s), {self.objects:,} object(s)\x1b[K"
        )
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write(
                f"\rlisted: {self.folders:,} folder(s), {self.objects:,} object(s)\x1b[K\n"
            )
            self.stream.flush()
            self.shown = False


def _expand(
    path: str,
    errors: list[str],
    partitions: Partitions | None = None,
    listing: Listing | None = None,
) -> Iterator[ObjectRef]:
    """The objects a PATH names, in the ``partitions`` asked for (a file named itself is always
    read); a PATH naming nothing is an error, not a silent no-op."""
    partitions = partitions or Partitions()
    listing = listing or Listing(io.StringIO())
    found = False
    if path.startswith("s3://"):

        def select(folder: str) -> bool | None:
            listing.update(folders=1)
            return partitions.folder(folder)

        try:
            for ref in _s3().list(path, select if partitions.asked else None):
                listing.update(objects=1)
                if partitions.keeps(ref.key):
                    found = True
                    yield ref
        except DetectorError as exc:
            errors.append(str(exc))
            return
    else:
        p = Path(path)
        if p.is_dir():
            for child in sorted(p.rglob("*.parquet")):
                listing.update(objects=1)
                name = child.as_posix()
                if child.is_file() and is_data_key(name) and partitions.keeps(name):
                    found = True
                    yield ObjectRef(key=str(child), size=child.stat().st_size)
        elif p.is_file():
            found = True
            yield ObjectRef(key=path, size=p.stat().st_size)
        else:
            errors.append(f"{path}: no such file or directory")
            return
    if not found:
        where = " in the partitions asked for" if partitions.asked else ""
        errors.append(f"{path}: no Parquet objects found{where}")


def _identity(ref: ObjectRef) -> tuple[object, ...]:
    """What makes two refs the same object: bucket and key, or the file itself (device and
    inode, so a file named directly, through its directory or through a link is one file)."""
    if ref.bucket is not None:
        return ("s3", ref.bucket, ref.key)
    try:
        st = Path(ref.key).stat()
    except OSError:
        return ("path", str(Path(ref.key).resolve()))
    return ("file", st.st_dev, st.st_ino)


def _unique(refs: list[ObjectRef], err: TextIO) -> list[ObjectRef]:
    """Each object once, however many PATHs name it (a file and its directory, overlapping
    prefixes): counting it twice would double its events."""
    seen: dict[tuple[object, ...], ObjectRef] = {}
    for ref in refs:
        seen.setdefault(_identity(ref), ref)
    if len(seen) < len(refs):
        err.write(f"note: {len(refs) - len(seen)} object(s) named more than once, scanned once\n")
    return list(seen.values())


def _open(ref: ObjectRef) -> IO[bytes]:
    if ref.bucket is None:
        try:
            return Path(ref.key).open("rb")
        except OSError as exc:
            raise ObjectUnreadable(ref.key, exc.strerror or str(exc)) from exc
    return _s3().open(ref)


@functools.cache
def _s3() -> S3Store:
    """One S3 client per process, built when S3 is first asked for (not once per object)."""
    from detector.aws.s3 import S3Store  # boto3 only when S3 is asked for

    return S3Store()


class Progress:
    """A bar of the objects done, with rows and their rate, on one stderr line (plain text
    redrawn after a carriage return); silent unless a terminal."""

    WIDTH = 24

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = total
        self.enabled = stream.isatty() and total > 1
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, objects: int, rows: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < 0.2:
            return
        self.last = now
        rate = rows / max(now - self.start, 1e-6)
        filled = self.WIDTH * objects // max(self.total, 1)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(
            f"\r[{bar}] {objects}/{self.total} objects, {rows:,} rows, {rate:,.0f} rows/s\x1b[K"
        )
        if final:
            self.stream.write("\n")
        self.stream.flush()


def _scan_paths(
    paths: Sequence[str],
    allowlist: Allowlist,
    err: TextIO,
    active: Sequence[Active] | None = None,
    partitions: Partitions | None = None,
) -> tuple[Run, list[str]]:
    """Scan every object the paths name (in the ``partitions`` asked for) with the ``active``
    detections (None: the default); the run and the inputs that could not be read: the objects,
    and the paths that named none."""
    problems: list[str] = []
    _s3.cache_clear()  # one S3 client per run (credentials or endpoint may change between runs)
    listing = Listing(err)
    try:
        found = [ref for path in paths for ref in _expand(path, problems, partitions, listing)]
    finally:
        listing.done()
    refs = _unique(found, err)
    run = Run(allowlist, active)
    progress = Progress(err, len(refs))
    for done, ref in enumerate(refs, 1):
        try:
            with closing(_open(ref)) as stream:
                run.add(
                    scan_object(stream, ref.uri, allowlist, key=ref.key, active=active), adopt=True
                )
        except (BadObject, ObjectUnreadable) as exc:
            problems.append(str(exc))
        progress.update(done, run.rows)
    progress.update(len(refs), run.rows, final=True)
    return run, problems


def _write(
    findings: list[Finding],
    fmt: str,
    out: TextIO,
    active: Sequence[Active] = (),
    **inputs: Any,
) -> None:
    """The findings in ``fmt``; ``active``: the detections that ran (a table line and a JSON
    ``detections`` entry each, those without findings too)."""
    ran = [one.detection for one in active]
    if fmt == "jsonl":
        write_jsonl(findings, out)
    elif fmt == "json":
        write_json(findings, out, ran, inputs=inputs)
    else:
        write_table(findings, out, ran)


def _report_unread(problems: list[str], read: int, err: TextIO) -> int:
    """Name each input not read, then say how many were: all (0), some (1), none (3)."""
    for problem in problems:
        err.write(f"error: {safe_text(problem, 1000)}\n")
    if not problems:
        return EXIT_OK
    total = read + len(problems)
    if not read:
        err.write(f"error: 0 of {total} inputs read: nothing was scanned, no result\n")
        return EXIT_NOTHING_READ
    err.write(
        f"warning: {read} of {total} inputs read; the findings are of those only "
        f"({len(problems)} could not be read)\n"
    )
    return EXIT_UNREAD


def _scan_allowlist(args: argparse.Namespace, active: Sequence[Active], err: TextIO) -> Allowlist:
    """``--allowlist``, required only by detections that use it (``uses_allowlist``)."""
    users = [one.detection.slug for one in active if one.detection.uses_allowlist]
    if args.allowlist is None:
        if users:
            raise UsageError(
                f"--allowlist is required by {', '.join(users)} (it trusts what it lists)"
            )
        return Allowlist.of([], source="(none: no detection run uses an allowlist)")
    if not users:
        slugs = ", ".join(one.detection.slug for one in active)
        err.write(f"note: --allowlist is not used by {slugs}\n")
    allowlist = _load_allowlist(args.allowlist)
    _warn_empty(allowlist, args.allowlist, active, err)
    return allowlist


def scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    active = _actives(args)
    partitions = _partitions(args.since, args.until, args.region, args.account)
    allowlist = _scan_allowlist(args, active, err)
    run, problems = _scan_paths(args.paths, allowlist, err, active, partitions)
    extra = {"partitions": partitions.describe()} if partitions.asked else {}
    # Nothing read is no result: no "no findings" line, no empty output that reads as one. The
    # JSON document still names every input that could not be read.
    if run.objects or args.format == "json":
        _write(
            run.findings(),
            args.format,
            out,
            active,
            objects=run.objects,
            rows=run.rows,
            unreadable=problems,
            **extra,
        )
    if run.objects and problems and args.format == "table":
        # A person reads the table: its "no findings" line is not about what was not read.
        out.write(_partial(run.objects, problems) + "\n")
    return _report_unread(problems, run.objects, err)


def _partial(read: int, problems: Sequence[str], what: str = "the lines above are") -> str:
    return (
        f"Only {read} of {read + len(problems)} inputs read: {what} about those "
        "(the others are named on stderr)."
    )


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
            f"{athena_sql.human_bytes(status.scanned_bytes)} scanned\x1b[K"
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
            "cost_usd": round(sum(athena_sql.cost_usd(r.scanned_bytes) for r in self.runs), 6),
        }
        if len(self.runs) > 1:
            info["queries"] = [
                {
                    "detection": r.detection,
                    "query_id": r.query_id,
                    "scanned_bytes": r.scanned_bytes,
                    "cost_usd": round(athena_sql.cost_usd(r.scanned_bytes), 6),
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
            err.write(athena_sql.cost_line(exc.status.scanned_bytes) + " (billed)\n")
        raise
    progress.done()
    err.write(f"Athena query {query_id} succeeded. {athena_sql.cost_line(status.scanned_bytes)}\n")
    result = athena.results(query_id)
    athena_sql.check_columns(result.columns, detection)
    found = athena_sql.findings(result.rows, detection)
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
            f"{len(run.runs)} Athena queries: {athena_sql.human_bytes(run.scanned_bytes)} "
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
    from detector.app.pipeline import notify_due

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
        except (OSError, ValueError, records.RecordInvalid, ConfigError) as exc:
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
