"""What the command line's commands share: the exit codes, ``UsageError`` (exit 2), the
detections asked for (``--detection``, ``--option``), the allowlist (a file or ``ssm:NAME``), the
findings in each output format, and the report of inputs that could not be read.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from detector import detections
from detector.analysis import athena_sql
from detector.analysis.findings import Finding
from detector.analysis.output import safe_text, write_json, write_jsonl, write_table
from detector.core.allowlist import Allowlist
from detector.core.errors import AllowlistUnavailable, ConfigError
from detector.core.spec import Active

EXIT_OK, EXIT_UNREAD, EXIT_USAGE, EXIT_NOTHING_READ, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    pass


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


def _partial(read: int, problems: Sequence[str], what: str = "the lines above are") -> str:
    return (
        f"Only {read} of {read + len(problems)} inputs read: {what} about those "
        "(the others are named on stderr)."
    )
