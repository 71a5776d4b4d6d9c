"""The ``scan`` command: the objects PATHs name (files, directories, ``s3://`` prefixes), the
Security Lake partitions asked for (``--since``/``--until``/``--region``/``--account``), each
object once, the listing and progress lines on a terminal, and the scan of them all.
"""

from __future__ import annotations

import argparse
import functools
import io
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO

from detector.analysis import athena_sql
from detector.analysis.engine import Run, scan_object
from detector.app.cli_common import (
    UsageError,
    _actives,
    _load_allowlist,
    _partial,
    _report_unread,
    _warn_empty,
    _write,
)
from detector.core.allowlist import Allowlist
from detector.core.errors import BadObject, DetectorError, ObjectUnreadable
from detector.core.objects import ObjectRef, is_data_key
from detector.core.spec import Active

if TYPE_CHECKING:
    from detector.aws.s3 import S3Store


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
