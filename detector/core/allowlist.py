"""The allowlist of principals trusted to push images: parsing, validation and matching.

Entries are exact values or globs (``*`` any run of characters, ``?`` one character),
case-sensitive, matched against the whole value. An entry trusts a row when it matches the caller
ARN, the session issuer ARN (so a role ARN covers all of its sessions) or the AWS service that
made the call (``actor.invoked_by``). A row with none of those three (a push AWS made itself,
e.g. replication or a pull-through cache) is trusted when an entry matches its source domain
(``src_endpoint.domain``); for any other row the domain is never looked at.

Every entry must mean one account's principals or one AWS service (``entry_problem``):

- an ARN ``arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`` with a 12-digit account and a
  resource, and no ``*`` or ``?`` before the resource. The matched value then has to start with
  the entry's literal ``arn:…:ACCOUNT:``, so a glob in the resource can only reach principals of
  that account. A glob earlier could stand for any account: ``*`` also spans ``:``, and IAM paths
  may hold ``:``, so even ``arn:aws:i*::111122223333:user/x`` matches a user of another account
  whose path ends in ``::111122223333:user/``.
- an AWS service name ``NAME.amazonaws.com`` (or ``.amazonaws.com.cn``), written out in full: a
  glob there would match role and session names of any account that end in ``.amazonaws.com``
  (``arn:aws:iam::999999999999:role/x.codebuild.amazonaws.com`` is a valid role ARN).

**Account lists.** "This role in each of these accounts" is written without an account glob, as
an entry whose account is the name of an account list in braces:
``arn:aws:iam::{ci-accounts}:role/ci-deployer``. The list (12-digit account ids, kept in its own
SSM parameter, see ``detector.aws.ssm``) is expanded into one exact entry per account when the
allowlist is parsed, so the entry can never trust an account outside the list; naming a list
that does not exist is an error naming the entry and its line.

A federated user (``arn:aws:sts::ACCOUNT:federated-user/NAME``) is refused too, and so is any sts
entry that does not begin with ``assumed-role/`` (a glob before that could match one):
``sts:GetFederationToken`` lets its caller pick NAME, so such an entry trusts whoever may call
it in that account. The principal of a federated user is the IAM user
who minted it (its session issuer): list that user instead.

Anything else (``*``, ``arn:*``, ``*:*``, a principal id, a bare name) is refused, naming the
entry and its line: an allowlist that silently trusts everyone, or silently trusts nobody it
names, is worse than one that fails loudly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from detector.core.errors import AllowlistInvalid

# Entries are ARNs, service names or globs of them: printable, no spaces. Anything else is far
# more likely a paste error than a principal, and silently never matching would hide it.
_VALID_ENTRY = re.compile(r"[!-~]+")
# After account lists are expanded (an organisation: thousands of entries). Exact entries are
# one hash-set lookup per row however many; globs are one RE2 alternation.
_MAX_ENTRIES = 50_000
# ``arn:PARTITION:SERVICE:REGION:{LIST}:RESOURCE``: an entry over a named account list.
_ACCOUNT_LIST_ENTRY = re.compile(
    r"(?P<head>arn:[^:{}]*:[^:{}]*:[^:{}]*:)\{(?P<list>[^{}:]*)\}(?P<tail>:.*)", re.DOTALL
)
_LIST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_GLOB_CHARS = frozenset("*?")

# The fields of an ARN before its resource, as AWS writes them (lower case: matching is
# case-sensitive, so anything else would never match).
_PARTITION = re.compile(r"aws(?:-[a-z]+)*")  # aws, aws-cn, aws-us-gov, aws-iso-b, ...
_SERVICE = re.compile(r"[a-z0-9][a-z0-9-]*")
_REGION = re.compile(r"(?:[a-z]{2}(?:-[a-z]+)+-[0-9]+)?")  # empty for IAM and STS
_ACCOUNT = re.compile(r"[0-9]{12}")  # not \d: that takes any script's digits
_SERVICE_NAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+amazonaws\.com(?:\.cn)?")

_EXAMPLES = (
    "an entry is an ARN with its 12-digit account (arn:aws:iam::111122223333:role/ci, "
    "arn:aws:sts::111122223333:assumed-role/ci/*) or an AWS service name "
    "(codebuild.amazonaws.com)"
)
_ANY_ACCOUNT = "would trust principals of any account"


def _has_glob(text: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(text)


# Principals of two accounts, to word the refusal of a malformed glob: it either matches these
# (a catch-all) or is merely not an ARN.
_PROBES = tuple(
    f"arn:aws:{principal}"
    for account in ("999999999999", "000000000000")
    for principal in (
        f"iam::{account}:user/x",
        f"iam::{account}:role/x",
        f"iam::{account}:root",
        f"sts::{account}:assumed-role/x/y",
    )
)


def _glob_matches(glob: str, value: str) -> bool:
    """Whole-value glob match in O(len(glob) * len(value)): a backtracking regex could take
    exponential time on a typo such as ``*?*?*?*?*?*?*?*?x``, and this runs on every entry."""
    g = v = 0
    star, mark = -1, 0
    while v < len(value):
        if g < len(glob) and glob[g] != "*" and glob[g] in ("?", value[v]):
            g, v = g + 1, v + 1
        elif g < len(glob) and glob[g] == "*":
            star, mark, g = g, v, g + 1
        elif star >= 0:
            mark += 1
            g, v = star + 1, mark
        else:
            return False
    return glob[g:].strip("*") == ""


def _catch_all(entry: str) -> bool:
    return any(_glob_matches(entry, p) for p in _PROBES)


def entry_problem(entry: str) -> str | None:
    """Why ``entry`` cannot be an allowlist entry (a phrase after the entry), or None."""
    if not _VALID_ENTRY.fullmatch(entry):
        return "is not a printable ARN or glob (a space, control or non-ASCII character)"
    if entry.startswith("arn:"):
        return _arn_problem(entry)
    if entry.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        if _has_glob(entry):
            return (
                "has a * or ?, which in a service name can match role and session names of any "
                "account that end in .amazonaws.com; write each service name out in full"
            )
        if not _SERVICE_NAME.fullmatch(entry):
            return (
                "is not an AWS service name (lower-case DNS labels, as in codebuild.amazonaws.com)"
            )
        return None
    if _catch_all(entry):
        return f"{_ANY_ACCOUNT}; {_EXAMPLES}"
    return f"is not an ARN or an AWS service name; {_EXAMPLES}"


def _arn_problem(entry: str) -> str | None:
    fields = entry.split(":", 5)
    if len(fields) < 6:
        if _catch_all(entry):
            return f"{_ANY_ACCOUNT}; {_EXAMPLES}"
        return "is not a whole ARN (arn:partition:service:region:account:resource)"
    _, partition, service, region, account, resource = fields
    if _has_glob(":".join(fields[:5])):
        return (
            f"{_ANY_ACCOUNT}: a * or ? before the resource can stand for another account "
            "(it also spans ':'); write partition, service, region and account out"
        )
    if not _PARTITION.fullmatch(partition):
        return f"has partition {partition!r}, not an AWS partition (aws, aws-cn, aws-us-gov, …)"
    if not _SERVICE.fullmatch(service):
        return f"has service {service!r}, not a lower-case AWS service prefix (iam, sts, …)"
    if not _REGION.fullmatch(region):
        return f"has region {region!r}, not an AWS region (empty for iam and sts)"
    if not _ACCOUNT.fullmatch(account):
        return f"has account {account!r}: a principal's ARN holds its 12-digit account id"
    if not resource:
        return "has no resource (role/NAME, user/NAME, assumed-role/ROLE/SESSION, root)"
    # An sts principal is an assumed-role session or a federated user. Only the first can be
    # trusted: every sts entry must begin, literally, with "assumed-role/" (a glob before it,
    # as in "*/ci" or "?ederated-user/x", could reach a federated user).
    if service == "sts" and not resource.startswith("assumed-role/"):
        return (
            "is not an assumed-role session (arn:...:sts::ACCOUNT:assumed-role/ROLE/...): it "
            "names, or a * or ? in it could match, a federated user, whose name whoever may "
            "call sts:GetFederationToken in that account chooses: list the IAM user who issues "
            f"it instead (arn:{partition}:iam::{account}:user/NAME, its session issuer)"
        )
    return None


def _glob_to_regex(entry: str) -> str:
    parts = []
    for ch in entry:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return "".join(parts)


def _json_entries(text: str, source: str) -> list[tuple[str, int]]:
    """The strings of a JSON array, each with the line it starts on."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AllowlistInvalid(source, f"looks like JSON but is not: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise AllowlistInvalid(source, "a JSON allowlist must be an array of strings")
    # json.loads has checked the syntax; walk it again only to learn where each string starts.
    decoder = json.JSONDecoder()
    out = []
    pos = text.index("[") + 1
    for value in data:
        while text[pos] in " \t\r\n":
            pos += 1
        _, end = decoder.raw_decode(text, pos)
        out.append((value, text.count("\n", 0, pos) + 1))
        pos = end
        while text[pos] in " \t\r\n,":
            pos += 1
    return out


def expand(
    entry: str, accounts: Mapping[str, Sequence[str]], where: str, source: str
) -> list[str] | None:
    """The entries an account-list entry stands for (one per account of its list), or None
    when ``entry`` names no list. Raises ``AllowlistInvalid`` naming ``where`` (its line) for
    a list that does not exist, a bad list name or an expanded entry that is not valid."""
    found = _ACCOUNT_LIST_ENTRY.fullmatch(entry)
    if found is None:
        return None
    name = found["list"]
    if not _LIST_NAME.fullmatch(name):
        raise AllowlistInvalid(
            source,
            f"{where}: {entry[:80]!r} names the account list {name[:40]!r}: a list name "
            "is letters, digits, '.', '_' or '-'",
        )
    if name not in accounts:
        known = ", ".join(sorted(accounts)[:10]) or "none is configured (ACCOUNT_LISTS_PATH)"
        raise AllowlistInvalid(
            source,
            f"{where}: {entry[:80]!r} names the account list {name!r}, which does not "
            f"exist (account lists: {known})",
        )
    out = []
    for account in accounts[name]:
        expanded = f"{found['head']}{account}{found['tail']}"
        problem = entry_problem(expanded)
        if problem:
            raise AllowlistInvalid(
                source,
                f"{where}: {entry[:80]!r} over account list {name!r}: {expanded[:80]!r} {problem}",
            )
        out.append(expanded)
    return out


def account_list(text: str, source: str) -> tuple[str, ...]:
    """The 12-digit account ids of an account list: one per line or comma-separated, ``#``
    comments. Anything else is refused naming the line: a typo must not drop an account
    silently, nor add one."""
    out: list[str] = []
    for lineno, raw in enumerate(text.split("\n"), 1):
        for part in raw.split("#", 1)[0].split(","):
            account = part.strip(" \t\r")
            if not account:
                continue
            if not _ACCOUNT.fullmatch(account):
                raise AllowlistInvalid(
                    source, f"line {lineno}: {account[:40]!r} is not a 12-digit AWS account id"
                )
            out.append(account)
    if not out:
        raise AllowlistInvalid(source, "the account list holds no account id")
    return tuple(dict.fromkeys(out))


def _checked_entry(
    entry: str, accounts: Mapping[str, Sequence[str]], where: str, source: str
) -> list[str]:
    expanded = expand(entry, accounts, where, source)
    if expanded is not None:
        return expanded
    problem = entry_problem(entry)
    if problem:
        raise AllowlistInvalid(source, f"{where}: {entry[:80]!r} {problem}")
    return [entry]


def _line_entries(
    line: str,
    lineno: int,
    several_lines: bool,
    source: str,
    accounts: Mapping[str, Sequence[str]],
) -> list[str]:
    """The entries of one line (comment removed, stripped); see ``Allowlist.parse``."""
    if "{" in line:
        # Braces are never part of an ARN: a line naming an account list is one entry, or a
        # comma-separated list of entries each expanded on its own.
        out: list[str] = []
        for part in (f.strip(" \t") for f in line.split(",")):
            if part:
                out.extend(_checked_entry(part, accounts, f"line {lineno}", source))
        return out
    if "," not in line:
        problem = entry_problem(line)
        if problem:
            raise AllowlistInvalid(source, f"line {lineno}: {line[:80]!r} {problem}")
        return [line]
    fragments = [f.strip(" \t") for f in line.split(",")]
    fragments = [f for f in fragments if f]
    bad = [(f, p) for f in fragments if (p := entry_problem(f)) is not None]
    if not bad:
        return fragments  # a comma-separated list, as SSM stores a StringList
    whole = entry_problem(line) is None
    if whole and several_lines:
        # One entry per line: an IAM name may hold a comma, and this line is not a list.
        return [line]
    fragment, problem = bad[0]
    hint = (
        "; to trust one name holding a comma, write one entry per line (a value of two or more "
        "lines, e.g. with a # comment line first) or a JSON array"
        if whole
        else ""
    )
    raise AllowlistInvalid(
        source,
        f"line {lineno} {line[:80]!r} is read as a comma-separated list, and its part "
        f"{fragment[:80]!r} {problem}{hint}",
    )


@dataclass(frozen=True)
class Allowlist:
    """Trusted principals. Build with ``Allowlist.parse`` or ``Allowlist.of`` (which check
    every entry); the constructor takes entries as they are."""

    entries: tuple[str, ...]
    source: str = "<inline>"
    _exact: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _pattern: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact = tuple(e for e in self.entries if not _has_glob(e))
        globs = [e for e in self.entries if _has_glob(e)]
        # One anchored alternation, run by RE2 in Arrow: linear time whatever the input.
        pattern = "(?s)^(?:" + "|".join(_glob_to_regex(g) for g in globs) + ")$" if globs else None
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_pattern", pattern)

    @classmethod
    def _checked(cls, entries: list[str], source: str) -> Allowlist:
        if len(entries) > _MAX_ENTRIES:
            raise AllowlistInvalid(source, f"{len(entries)} entries, more than {_MAX_ENTRIES}")
        return cls(tuple(dict.fromkeys(entries)), source)

    @classmethod
    def of(cls, entries: Iterable[str], source: str = "<inline>") -> Allowlist:
        """An allowlist of ``entries``, each checked by ``entry_problem``."""
        checked = []
        for i, entry in enumerate(entries, 1):
            problem = entry_problem(entry)
            if problem:
                raise AllowlistInvalid(source, f"entry {i} {entry[:80]!r} {problem}")
            checked.append(entry)
        return cls._checked(checked, source)

    @classmethod
    def parse(
        cls,
        text: str,
        source: str = "<inline>",
        accounts: Mapping[str, Sequence[str]] | None = None,
    ) -> Allowlist:
        """Parse lines (``#`` comments), comma-separated values (SSM StringList) or a JSON array.

        A JSON array's strings are entries as they are. Otherwise each line (``#`` starts a
        comment) is one entry, or a comma-separated list of entries when every part is one. A
        line whose parts are not all entries is one entry holding commas (an IAM name may) when
        the value has several non-blank lines, and refused when it is the only line: a one-line
        value is what SSM makes of a StringList, where a comma always separates.

        ``accounts``: the named account lists an entry may be written over (``{name}`` in place
        of the account), each expanded into one entry per account.
        """
        return cls._checked(cls.parse_entries(text, source, accounts), source)

    @classmethod
    def parse_entries(
        cls,
        text: str,
        source: str = "<inline>",
        accounts: Mapping[str, Sequence[str]] | None = None,
    ) -> list[str]:
        """The checked entries of ``text`` (see ``parse``), for lists combined from several
        sources (``combine``)."""
        accounts = accounts or {}
        stripped = text.strip()
        if stripped.startswith("["):
            lead = text.count("\n", 0, len(text) - len(text.lstrip()))
            entries: list[str] = []
            for i, (raw, at) in enumerate(_json_entries(stripped, source), 1):
                entry = raw.strip()
                if not entry:
                    continue
                entries.extend(
                    _checked_entry(entry, accounts, f"line {at + lead}: entry {i}", source)
                )
            return entries
        lines = text.split("\n")
        several = sum(1 for raw in lines if raw.strip()) > 1
        entries = []
        for lineno, raw in enumerate(lines, 1):
            # Only ASCII blanks are stripped: another invisible character at either end of an
            # entry is reported rather than quietly dropped.
            line = raw.split("#", 1)[0].strip(" \t\r")
            if line:
                entries.extend(_line_entries(line, lineno, several, source, accounts))
        return entries

    @classmethod
    def combine(cls, entries: Iterable[str], source: str) -> Allowlist:
        """One allowlist of entries already checked (``parse_entries`` of several sources)."""
        return cls._checked(list(entries), source)

    @property
    def empty(self) -> bool:
        return not self.entries

    def matches(self, value: str | None) -> bool:
        """Plain-Python match of one value (the vectorised ``mask`` is what scans use)."""
        if value is None:
            return False
        if value in self._exact:
            return True
        return self._pattern is not None and re.fullmatch(self._pattern, value) is not None

    def trusts(
        self,
        user: str | None,
        session_issuer: str | None,
        invoked_by: str | None,
        src_domain: str | None,
    ) -> bool:
        """Plain-Python form of ``trust_mask`` for one row."""
        if user is None and session_issuer is None and invoked_by is None:
            return self.matches(src_domain)
        return any(self.matches(v) for v in (user, session_issuer, invoked_by))

    def mask(self, *columns: pa.Array) -> pa.Array:
        """True for each row where any of ``columns`` matches an entry; null never matches."""
        n = len(columns[0])
        result = pa.array([False] * n, pa.bool_()) if n < 1024 else pa.repeat(False, n)
        if self.empty:
            return result
        exact = pa.array(self._exact, pa.string())
        for col in columns:
            if pa.types.is_null(col.type):
                continue
            hit = pc.is_in(col, value_set=exact) if len(exact) else None
            if self._pattern is not None:
                rx = pc.match_substring_regex(col, self._pattern)
                hit = rx if hit is None else pc.or_(hit, rx)
            if hit is not None:
                result = pc.or_(result, pc.fill_null(hit, False))
        return result

    def trust_mask(
        self,
        user: pa.Array,
        session_issuer: pa.Array,
        invoked_by: pa.Array,
        src_domain: pa.Array,
    ) -> pa.Array:
        """True for each row the allowlist trusts (never null).

        A row is trusted by its caller ARN, session issuer or calling service; a row with none
        of the three (AWS pushing on its own) by its source domain. The domain of a row with an
        identity is never consulted, so no caller can borrow a service's domain.
        """
        trusted = self.mask(user, session_issuer, invoked_by)
        if self.empty or pa.types.is_null(src_domain.type):
            return trusted
        anonymous = pc.and_(
            pc.and_(pc.is_null(user), pc.is_null(session_issuer)), pc.is_null(invoked_by)
        )
        if not pc.any(anonymous).as_py():
            return trusted
        return pc.or_(trusted, pc.and_(anonymous, self.mask(src_domain)))
