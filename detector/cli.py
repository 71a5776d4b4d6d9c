"""``ecr-upload-detector``: the command line.

Exit codes: 0 every input was read; 1 some input could not be read (each named on stderr, the
rest still scanned and reported); 2 usage error (bad arguments, unreadable allowlist).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import IO, TextIO

from detector import __version__
from detector.allowlist import Allowlist
from detector.engine import Run, scan_object
from detector.errors import (
    AllowlistInvalid,
    AllowlistUnavailable,
    BadObject,
    DetectorError,
    ObjectUnreadable,
)
from detector.objects import ObjectRef, is_data_key
from detector.output import safe_text, write_json, write_jsonl, write_table

EXIT_OK, EXIT_UNREAD, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ecr-upload-detector",
        description="Find Amazon ECR image pushes (PutImage) by principals not on an allowlist, "
        "in Amazon Security Lake CloudTrail data (OCSF, both source versions).",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    scan = sub.add_parser(
        "scan",
        help="scan Security Lake Parquet objects and print findings",
        description="Scan Parquet objects: files, directories (searched recursively for "
        "*.parquet) or s3://bucket/prefix.",
    )
    scan.add_argument("paths", nargs="+", metavar="PATH")
    scan.add_argument(
        "--allowlist",
        required=True,
        metavar="FILE",
        help="trusted principals: one ARN or glob per line (# comments), commas, or a JSON array; "
        "an empty file trusts no one. ssm:NAME reads an SSM parameter instead",
    )
    scan.add_argument("--format", choices=("table", "jsonl", "json"), default="table")
    return p


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


def _expand(path: str, errors: list[str]) -> Iterator[ObjectRef]:
    """The objects a PATH names; a PATH naming nothing is an error, not a silent no-op."""
    found = False
    if path.startswith("s3://"):
        from detector.aws.s3 import S3Store  # boto3 only when S3 is asked for

        try:
            for ref in S3Store().list(path):
                found = True
                yield ref
        except DetectorError as exc:
            errors.append(str(exc))
            return
    else:
        p = Path(path)
        if p.is_dir():
            for child in sorted(p.rglob("*.parquet")):
                if child.is_file() and is_data_key(child.as_posix()):
                    found = True
                    yield ObjectRef(key=str(child), size=child.stat().st_size)
        elif p.is_file():
            found = True
            yield ObjectRef(key=path, size=p.stat().st_size)
        else:
            errors.append(f"{path}: no such file or directory")
            return
    if not found:
        errors.append(f"{path}: no Parquet objects found")


def _open(ref: ObjectRef) -> IO[bytes]:
    if ref.bucket is None:
        try:
            return Path(ref.key).open("rb")
        except OSError as exc:
            raise ObjectUnreadable(ref.key, exc.strerror or str(exc)) from exc
    from detector.aws.s3 import S3Store

    return S3Store().open(ref)


class Progress:
    """Objects and rows done, with the rate, on one stderr line; silent unless a terminal."""

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
        self.stream.write(
            f"\r{objects}/{self.total} objects, {rows:,} rows, {rate:,.0f} rows/s\x1b[K"
        )
        if final:
            self.stream.write("\n")
        self.stream.flush()


def scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    allowlist = _load_allowlist(args.allowlist)
    if allowlist.empty:
        err.write(f"warning: allowlist {args.allowlist} is empty: every PutImage is reported\n")
    problems: list[str] = []
    refs = [ref for path in args.paths for ref in _expand(path, problems)]
    run = Run(allowlist)
    progress = Progress(err, len(refs))
    for done, ref in enumerate(refs, 1):
        try:
            with closing(_open(ref)) as stream:
                run.add(scan_object(stream, ref.uri, allowlist, key=ref.key))
        except (BadObject, ObjectUnreadable) as exc:
            problems.append(str(exc))
        progress.update(done, run.rows)
    progress.update(len(refs), run.rows, final=True)
    findings = run.findings()
    if args.format == "jsonl":
        write_jsonl(findings, out)
    elif args.format == "json":
        write_json(
            findings, out, inputs={"objects": run.objects, "rows": run.rows, "unreadable": problems}
        )
    else:
        write_table(findings, out)
    for problem in problems:
        err.write(f"error: {safe_text(problem, 1000)}\n")
    if problems:
        err.write(f"{len(problems)} input(s) could not be read; the rest were scanned.\n")
        return EXIT_UNREAD
    return EXIT_OK


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
        return scan(args, out, err)
    except (UsageError, AllowlistInvalid) as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    except DetectorError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_UNREAD
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # the last boundary: a bug is reported in one line, not a traceback
        err.write(
            f"internal error: {type(exc).__name__}: {safe_text(exc, 500)} "
            "(please report it with the command line)\n"
        )
        return EXIT_UNREAD
