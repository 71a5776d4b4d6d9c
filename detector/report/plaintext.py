"""Plain text made safe for a person to read, from values anyone with AWS credentials can shape.

A data value is escaped, its blank space collapsed and its length capped (``_clean``); text is
wrapped to ``WIDTH`` with every continuation line of data marked (``_data``), so a value cannot
render as a line of the email's own; shell commands quote every value (``_command``), and a
detection's steps are rendered with them (``_step_lines``). Pure.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from detector.analysis.findings import ctime
from detector.analysis.output import safe_text
from detector.core.spec import Step

# Longest data value shown in the email; more is cut with an ellipsis.
VALUE_MAX = 200
WIDTH = 70
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
# Blank space within a line: every Unicode whitespace character (tab, NBSP, U+3000, ...) except
# the line and record separators (``\n``, ``\r``, U+0085, U+2028, ...), which ``safe_text``
# shows escaped instead, as a sign that someone put a line break into the data.
# Printable characters that show as blank space (Hangul fillers, the Braille blank, ...) count
# as blank too: they are no whitespace to Python, but pad a line all the same.
_BLANKS = re.compile(
    r"(?:[^\S\n\r\v\f\x1c-\x1f\x85\u2028\u2029]|[\u115f\u1160\u2800\u3164\uffa0])+"
)
# Starts every continuation line of a wrapped data value (after the indentation): see ``_data``.
CONTINUED = "| "


def _clean(value: object, limit: int = VALUE_MAX) -> str:
    """A data value made safe to show: control characters and line breaks escaped, every run of
    blank space (spaces, tabs, NBSP, U+3000, ...) one space, so that padding cannot place text
    where the wrapping puts it on a line of its own; length capped."""
    if value is None or value == "":
        return "(not recorded)"
    raw = str(value)
    # Escaping only lengthens text, so cutting first gives the same result without walking
    # a megabyte-long user agent character by character. Collapsing shortens it: cut at four
    # times the limit, and say the value was cut even if little is left (a megabyte of spaces).
    room = limit * 4
    text = _BLANKS.sub(" ", raw[:room])
    text = text[: limit - 1] + "…" if len(raw) > room else text[: limit + 1]
    if text.isprintable():  # no Other or Separator character: nothing for safe_text to escape
        return text if len(text) <= limit else text[: limit - 1] + "…"
    return safe_text(text, limit)


def _data(text: str, indent: str = "  ") -> list[str]:
    """``text`` (a label and data values) wrapped, every continuation line marked.

    Continuation lines are indented two more and start with ``CONTINUED`` ("| "), which no line
    of the email's own starts with. Data can never begin a line any other way (``_clean``
    escapes line breaks), so whatever a value holds and however it is padded, it cannot render
    as a line of the email's own (a detection's "<Operation> calls: ..." label or outcome
    note, "Who", a "----" rule): on a phone, a line starting with "|" reads as the line
    above, continued. ASCII, so every mail client shows it the same.
    """
    return _wrap(text, indent=indent, hang=indent + "  " + CONTINUED)


def _wrap(text: str, indent: str = "  ", hang: str = "    ") -> list[str]:
    """Our own text (or a label and data, through ``_data``) wrapped to ``WIDTH``."""
    if len(indent) + len(text) <= WIDTH:
        return [(indent + text).rstrip()]
    return textwrap.wrap(
        text,
        width=WIDTH,
        initial_indent=indent,
        subsequent_indent=hang,
        break_long_words=False,  # keep ARNs and URLs whole so they can be copied
        break_on_hyphens=False,
    ) or [indent.rstrip()]


def _when(ms: int | None) -> str:
    text = ctime(ms)
    if text is not None:
        return text.replace("T", " ") + " UTC"
    if ms is None:
        return "(not recorded)"
    return f"(out of range: {ms} ms since 1970)"


def _command(words: Sequence[str], options: Sequence[tuple[str, str]]) -> list[str]:
    """A shell command, every value quoted, continued with backslashes past ~70 columns."""
    head = " ".join(shlex.quote(w) for w in words)
    opts = [f"{flag} {shlex.quote(value)}" for flag, value in options]
    one_line = "    " + " ".join([head, *opts])
    if len(one_line) <= WIDTH:
        return [one_line]
    lines = ["    " + head + " \\"]
    for i, opt in enumerate(opts):
        lines.append("      " + opt + (" \\" if i < len(opts) - 1 else ""))
    return lines


def _window(first_ms: int | None, last_ms: int | None) -> tuple[str, str] | None:
    """The alert's time range padded by a minute each side, as CLI timestamps; None when a
    time is missing or outside what a calendar date can hold (hostile data)."""
    first, last = ctime(first_ms), ctime(last_ms)
    if first is None or last is None:
        return None
    pad = timedelta(minutes=1)
    try:
        start = datetime.strptime(first, _TIME_FORMAT).replace(tzinfo=UTC) - pad
        end = datetime.strptime(last, _TIME_FORMAT).replace(tzinfo=UTC) + pad
    except (ValueError, OverflowError):
        return None
    return start.strftime(_TIME_FORMAT) + "Z", end.strftime(_TIME_FORMAT) + "Z"


def _step_lines(step: Step, indent: str = "  - ", hang: str = "    ") -> list[str]:
    """One step of a detection's: our text, its commands, data values, our notes."""
    lines = _wrap(step.text, indent=indent, hang=hang)
    for cmd in step.commands:
        lines += _command(cmd.words, cmd.options)
    for value in step.data:
        lines += _data(value, indent="    ")  # one word (no spaces): one line
    for note in step.notes:
        lines += _wrap(note, indent="    ", hang="    ")
    return lines
