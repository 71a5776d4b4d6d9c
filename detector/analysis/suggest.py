"""A first allowlist from history: who pushed images, for a person to review.

Findings of an allowlist-free run of the allowlist detection (every call it watches is a
finding) are folded into one entry per principal, written so that the allowlist would actually
match it:

- an assumed-role session is trusted through its role: the session issuer ARN when recorded
  (``arn:aws:iam::ACCT:role/path/ROLE``, path included, which is what the allowlist compares),
  otherwise the glob ``arn:aws:sts::ACCT:assumed-role/ROLE/*`` over the caller ARN (a bare role
  ARN would match nothing there: no issuer to compare it with);
- a federated user through the IAM user who minted it (its session issuer): the federated name
  is the caller's choice and is refused as an entry (``allowlist.entry_problem``);
- any other caller ARN (IAM user, root) as it is;
- a call with no caller ARN made by an AWS service (``actor.invoked_by``): the service name;
- a call with no caller identity at all that AWS made itself (replication, pull-through cache):
  its source domain (``src_endpoint.domain``, an AWS service's name), which the allowlist
  compares for such calls only.

Entries come most pushes first, each after a ``#`` comment with its push count (how many
succeeded, failed, or have no recorded outcome), last push, accounts and the values of the
detection's escalation sample (what was pushed to). A principal none of whose pushes succeeded
(a stolen key probing, a misconfigured job) has shown no need to push: ``split_failed`` sets
such principals aside, and ``render`` counts them in a comment instead of listing them. A principal
that is not a valid allowlist entry
(``allowlist.entry_problem``: not an ARN of one 12-digit account or an AWS service name, spaces,
control characters) or that the line format would change (``#``, ``,``, or ``*``/``?`` that would
turn it into a glob) is listed as a comment only. The output parses as an allowlist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from detector import detections
from detector.analysis.findings import Finding, Sample, ctime, max_opt
from detector.analysis.output import safe_text
from detector.core.allowlist import entry_problem

_ASSUMED_ROLE = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):sts::(?P<account>[0-9]{12}):assumed-role/(?P<role>[^/]+)/.+",
    re.DOTALL,
)
# What one allowlist line can hold as a plain (non-glob) entry.
_PLAIN_ENTRY = re.compile(r"[!-~]+")
_NOT_PLAIN = set("#,*?")


@dataclass
class Suggestion:
    """One principal that pushed: the allowlist entry (None when it cannot be one)."""

    entry: str | None
    kind: str  # role, session issuer, user, service, source domain, unknown
    shown: str  # what to show a person (the principal, escaped)
    pushes: int = 0
    succeeded: int = 0
    failed: int = 0
    last_ms: int | None = None
    accounts: set[str] = field(default_factory=set)
    # Values of the detection's escalation sample (where the calls went).
    targets: Sample = field(default_factory=Sample)
    via: set[str] = field(default_factory=set)


def _literal(value: str) -> bool:
    """``value`` reads back from one allowlist line as itself, not as a glob or a list."""
    return bool(_PLAIN_ENTRY.fullmatch(value)) and not (set(value) & _NOT_PLAIN)


def _plain(value: str) -> bool:
    """``value`` is an allowlist entry that reads back as exactly itself."""
    return _literal(value) and entry_problem(value) is None


def principal(f: Finding) -> tuple[str | None, str, str]:
    """(allowlist entry or None, kind, the principal as shown) for one finding."""
    issuers = f.session_issuers.sorted()
    if len(issuers) == 1:
        issuer = issuers[0]
        kind = "role" if ":role/" in issuer else "session issuer"
        return (issuer if _plain(issuer) else None), kind, issuer
    user = f.user
    if user:
        m = _ASSUMED_ROLE.fullmatch(user)
        if m:
            role = m["role"]
            glob = f"arn:{m['partition']}:sts::{m['account']}:assumed-role/{role}/*"
            ok = _literal(role) and entry_problem(glob) is None
            return (glob if ok else None), "role", glob
        return (user if _plain(user) else None), "user", user
    services = f.invoked_by.sorted()
    if len(services) == 1:
        service = services[0]
        return (service if _plain(service) else None), "service", service
    domain = f.field("src_domain")
    if not services and not issuers and domain:
        # No identity at all: the allowlist compares the source domain (an AWS service's name).
        return (domain if _plain(domain) else None), "source domain", domain
    return None, "unknown", "(no caller identity recorded)"


def suggest(findings: Iterable[Finding]) -> list[Suggestion]:
    """One suggestion per principal, most pushes first (then by entry)."""
    merged: dict[tuple[str | None, str, str], Suggestion] = {}
    for f in findings:
        entry, kind, shown = principal(f)
        s = merged.setdefault((entry, kind, shown), Suggestion(entry, kind, shown))
        s.pushes += f.count
        s.succeeded += f.succeeded
        s.failed += f.failed
        s.last_ms = max_opt(s.last_ms, f.last_ms)
        account = f.field("account")
        if account:
            s.accounts.add(account)
        s.targets.merge(f.sample(f.detection.escalate_on))
        if kind != "service":
            s.via.update(f.invoked_by.values)
    return sorted(merged.values(), key=lambda s: (-s.pushes, s.entry is None, s.shown))


def split_failed(suggestions: list[Suggestion]) -> tuple[list[Suggestion], list[Suggestion]]:
    """(principals with a successful push, those without one), each in the order given."""
    return (
        [s for s in suggestions if s.succeeded],
        [s for s in suggestions if not s.succeeded],
    )


def _outcomes(s: Suggestion) -> str:
    unknown = s.pushes - s.succeeded - s.failed
    text = f"{s.succeeded} succeeded, {s.failed} failed"
    return f"{text}, {unknown} outcome unknown" if unknown > 0 else text


def _listing(values: Iterable[str], more: bool, limit: int = 5) -> str:
    items = sorted(values)
    text = ", ".join(safe_text(v, 80) for v in items[:limit])
    extra = len(items) - limit
    if extra > 0 or more:
        text += f", … ({max(extra, 0)}+ more)" if extra > 0 else ", …"
    return text or "-"


def render(
    suggestions: list[Suggestion],
    *,
    source: str,
    left_out: Iterable[Suggestion] = (),
    notes: Iterable[str] = (),
) -> str:
    """The suggestions in the allowlist format, with ``#`` comments for the reviewer;
    ``left_out`` (principals without a successful push, not listed) counted in one, and
    ``notes`` (e.g. inputs not read) each in one after the source."""
    left = list(left_out)
    total = sum(s.pushes for s in suggestions)
    spec = detections.get(detections.DEFAULT)
    calls = " / ".join(spec.operations)
    targets = next(x.label.lower() for x in spec.samples if x.name == spec.escalate_on)
    lines = [
        "# Suggested ECR push allowlist for ecr-upload-detector.",
        f"# From: {safe_text(source, 200)}",
        *(f"# {safe_text(note, 200)}" for note in notes),
        f"# {len(suggestions)} principal(s), {total} {calls} call(s). Review every entry:",
        "# each one is trusted to push images from then on. Delete what you do not recognise.",
    ]
    if left:
        lines.append(
            f"# Left out: {len(left)} principal(s) none of whose {sum(s.pushes for s in left)} "
            f"{calls} call(s) succeeded (--include-failed lists them)."
        )
    for s in suggestions:
        details = (
            f"{s.kind}, {s.pushes} push(es) ({_outcomes(s)}), last {ctime(s.last_ms) or '-'}, "
            f"account(s) {_listing(s.accounts, False)}, "
            f"{targets} {_listing(s.targets.values, s.targets.more)}"
        )
        if s.via:
            details += f", via {_listing(s.via, False)}"
        lines.append("")
        if s.entry is None:
            reason = (
                "nothing to allowlist"
                if s.kind == "unknown"
                else (
                    "cannot be an allowlist entry (not an ARN of one account or an AWS service "
                    "name, or a space, control character, #, comma, * or ?)"
                )
            )
            lines.append(f"# {safe_text(s.shown, 200)}: {reason}")
            lines.append(f"# {details}")
        else:
            lines.append(f"# {details}")
            if not s.succeeded:
                lines.append("# No push succeeded: only attempts. Trust it only if you know why.")
            lines.append(s.entry)
    return "\n".join(lines) + "\n"
