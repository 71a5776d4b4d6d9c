"""The detection as one Athena (Trino) SQL statement, for a backfill over Security Lake history.

The statement computes what ``scan`` computes, over the Glue table of one source version:
``PutImage`` calls whose caller ARN, session issuer and calling service all miss the allowlist
(and, for calls with none of those, whose source domain misses it too),
grouped by the same seven keys (a null key is a group of its own), with the count, first and
last time, success/failure counts and samples (repositories, image tags, session issuers,
principal ids, calling services). Its result columns carry the ``scan --format jsonl`` names.

- The scan is limited by the table's partitions: v1 (``cloud_trail_mgmt_1_0``) is partitioned
  by ``region``, ``accountid`` and ``eventday`` (``yyyymmdd`` string); v2 (``…_2_0``, Iceberg)
  by ``region``, ``accountid`` and ``time_dt``. Only the days asked for (and the accounts, when
  given) are read; ``time`` then cuts the period exactly.
- ``firstTime``/``lastTime`` are epoch **milliseconds** (UTC): no date formatting function is
  common to Trino and DuckDB, so ``backfill`` formats them like ``scan`` does.
- Allowlist entries become SQL literals: exact entries in ``IN (…)``, globs as ``LIKE`` with
  ``ESCAPE '\\'`` (``*`` → ``%``, ``?`` → ``_``, a literal ``%``, ``_`` or ``\\`` escaped).
  ``LIKE`` is case-sensitive and whole-value in Trino and DuckDB, like the allowlist; a null
  never matches. Quotes are doubled; anything but printable ASCII is refused.
- Only constructs Trino and DuckDB share, plus four Trino functions the tests map onto DuckDB
  (``element_at`` on a map, ``json_extract_scalar``, ``slice``, ``json_format``): the tests run
  the statement on local Parquet and compare it with ``scan``.

Differences from ``scan``, on purpose or by nature: no event ids and no source objects (reading
``metadata.uid`` for every row would add a high-entropy column to the bytes billed), and events
without a ``time`` are outside every period.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from detector.allowlist import Allowlist, entry_problem
from detector.errors import DetectorError
from detector.findings import KEY_NAMES, MAX_VALUES, Aggregate, Finding
from detector.schema import GROUP_KEYS, V1, V2, Layout, SchemaVersion

# StartQueryExecution takes at most 256 KiB of query text.
MAX_QUERY_BYTES = 262_144
# Athena's price for SQL queries: per TB scanned, each query billed at least 10 MB, rounded up to
# the next MB. (Most regions; a few charge more.)
PRICE_PER_TB_USD = 5.0
MB = 1024**2
TB = 1024**4
MIN_BILLED_BYTES = 10 * MB

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]")
_ACCOUNT = re.compile(r"[0-9]{12}")  # not \d: that takes any script's digits
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PRINTABLE = re.compile(r"[ -~]*")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Result columns after the seven grouping keys, in order.
_AGGREGATES = ("count", "firstTime", "lastTime", "succeeded", "failed")
# Sampled values: result column → (inner column, Finding attribute).
_SAMPLES = {
    "repositories": ("repository", "repositories"),
    "image_tags": ("image_tag", "image_tags"),
    "session_issuers": ("session_issuer", "session_issuers"),
    "principal_ids": ("principal_id", "principal_ids"),
    "invoked_by": ("invoked_by", "invoked_by"),
}
# Values of successful calls: added first, with priority, so failed calls cannot evict them.
_OK_SAMPLES = {
    "succeeded_repositories": ("repository", "repositories"),
    "succeeded_image_tags": ("image_tag", "image_tags"),
}
RESULT_COLUMNS: tuple[str, ...] = (
    *(KEY_NAMES[k] for k in GROUP_KEYS),
    *_AGGREGATES,
    *_SAMPLES,
    *_OK_SAMPLES,
)


class QueryInputInvalid(DetectorError):
    """A region, account, time or allowlist that cannot go into the statement (a usage error)."""


class ResultInvalid(DetectorError):
    """A result row that does not have the shape the statement produces."""


# --- inputs ------------------------------------------------------------------------------------


def _parse_time(text: str, option: str, *, end: bool) -> datetime:
    """A date (``2026-11-20``) or a date-time; no offset means UTC, an offset is converted.

    A date as the end of a period means the end of that day (the whole day is included).
    """
    raw = text.strip()
    try:
        if _DATE.fullmatch(raw):
            day = datetime.fromisoformat(raw).replace(tzinfo=UTC)
            return day + timedelta(days=1) if end else day
        moment = datetime.fromisoformat(raw)
    except (ValueError, OverflowError) as exc:
        raise QueryInputInvalid(
            f"{option} {text[:40]!r} is not an ISO 8601 date (2026-11-20) or UTC date-time "
            "(2026-11-20T10:00:00Z)"
        ) from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    @classmethod
    def parse(cls, start: str, end: str) -> Period:
        first = _parse_time(start, "--start", end=False)
        after = _parse_time(end, "--end", end=True)
        if first < _EPOCH:
            raise QueryInputInvalid(f"--start {start!r} is before 1970")
        if after <= first:
            raise QueryInputInvalid(f"--end ({after:%Y-%m-%dT%H:%M:%SZ}) is not after --start")
        return cls(first, after)

    @property
    def start_ms(self) -> int:
        return (self.start - _EPOCH) // timedelta(milliseconds=1)

    @property
    def end_ms(self) -> int:
        return (self.end - _EPOCH) // timedelta(milliseconds=1)

    @property
    def days(self) -> tuple[str, str]:
        """First and last ``eventday`` (``yyyymmdd``) holding part of the period."""
        last = self.end - timedelta(milliseconds=1)
        return f"{self.start:%Y%m%d}", f"{last:%Y%m%d}"

    def describe(self) -> str:
        return f"{self.start:%Y-%m-%dT%H:%M:%SZ} to {self.end:%Y-%m-%dT%H:%M:%SZ} (end excluded)"


def check_region(region: str) -> str:
    if not _REGION.fullmatch(region):
        raise QueryInputInvalid(f"--region {region[:40]!r} is not an AWS region name (us-east-1)")
    return region


def parse_accounts(text: str | None) -> tuple[str, ...]:
    """``A,B`` → account ids, each exactly 12 digits; None or blank → no restriction."""
    if text is None:
        return ()
    accounts = [a.strip() for a in text.split(",") if a.strip()]
    if not accounts:
        raise QueryInputInvalid("--accounts is empty: give 12-digit account ids, comma-separated")
    for account in accounts:
        if not _ACCOUNT.fullmatch(account):
            raise QueryInputInvalid(
                f"--accounts: {account[:40]!r} is not a 12-digit AWS account id"
            )
    return tuple(dict.fromkeys(accounts))


def parse_version(text: str) -> SchemaVersion:
    versions = {"1": SchemaVersion.V1, "1.0": SchemaVersion.V1}
    versions |= {"2": SchemaVersion.V2, "2.0": SchemaVersion.V2}
    try:
        return versions[text.strip()]
    except KeyError:
        raise QueryInputInvalid(f"--source-version {text[:20]!r} is not 1 or 2") from None


@dataclass(frozen=True)
class Query:
    """What to look at: one source version's table in one region, over a period."""

    region: str
    version: SchemaVersion
    period: Period
    accounts: tuple[str, ...] = ()

    @property
    def layout(self) -> Layout:
        return V1 if self.version is SchemaVersion.V1 else V2

    @property
    def database(self) -> str:
        return f"amazon_security_lake_glue_db_{self.region.replace('-', '_')}"

    @property
    def table(self) -> str:
        suffix = "1_0" if self.version is SchemaVersion.V1 else "2_0"
        return (
            f"amazon_security_lake_table_{self.region.replace('-', '_')}_cloud_trail_mgmt_{suffix}"
        )


# --- SQL text ----------------------------------------------------------------------------------


def literal(value: str) -> str:
    """A SQL string literal. Only printable ASCII is accepted: nothing else is ever needed here,
    and it keeps control characters (and their odd handling by SQL engines) out of the query."""
    if not _PRINTABLE.fullmatch(value):
        raise QueryInputInvalid(f"{value[:80]!r} holds characters that cannot go into the query")
    return "'" + value.replace("'", "''") + "'"


def identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def column(path: str) -> str:
    """A dotted column path as a (row-field) dereference: ``"actor"."user"."uid"``."""
    return ".".join(identifier(part) for part in path.split("."))


def like_pattern(glob: str) -> str:
    """An allowlist glob as a LIKE pattern for ``ESCAPE '\\'``."""
    out = []
    for ch in glob:
        if ch in "\\%_":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _trusted(col: str, allowlist: Allowlist) -> str | None:
    """True where ``col`` matches an entry; false (never null) otherwise, null included.

    The entries are checked again here (``entry_problem``): an ``Allowlist`` built directly
    must not bring a catch-all into the statement either.
    """
    for entry in allowlist.entries:
        problem = entry_problem(entry)
        if problem:
            raise QueryInputInvalid(f"allowlist entry {entry[:80]!r} {problem}")
    exact = [e for e in allowlist.entries if "*" not in e and "?" not in e]
    globs = [e for e in allowlist.entries if "*" in e or "?" in e]
    tests = []
    if exact:
        tests.append(f"{col} IN ({', '.join(literal(e) for e in exact)})")
    tests += [f"{col} LIKE {literal(like_pattern(g))} ESCAPE '\\'" for g in globs]
    if not tests:
        return None
    return "coalesce(" + " OR ".join(tests) + ", false)"


def _request_fields(query: Query) -> tuple[str, str]:
    """SQL for (repository, image tag) out of the request column of the query's version."""
    request = column(query.layout.columns["request"])
    if query.version is SchemaVersion.V1:
        # v1 data holds request parameters in the ``unmapped`` map in two layouts, possibly
        # mixed: flattened (``requestParameters.repositoryName``) or one whole JSON value
        # (``requestParameters``, as AWS's v1 query examples read it). A flattened value wins,
        # as in ``schema.request_fields``. element_at gives null for a missing key, where the
        # subscript operator would fail the query; json_extract_scalar gives null for bad JSON.
        whole = f"element_at({request}, 'requestParameters')"
        return (
            f"coalesce(element_at({request}, 'requestParameters.repositoryName'), "
            f"json_extract_scalar({whole}, '$.repositoryName'))",
            f"coalesce(element_at({request}, 'requestParameters.imageTag'), "
            f"json_extract_scalar({whole}, '$.imageTag'))",
        )
    return (
        f"json_extract_scalar({request}, '$.repositoryName')",
        f"json_extract_scalar({request}, '$.imageTag')",
    )


def _partition_filter(query: Query) -> list[str]:
    period = query.period
    if query.version is SchemaVersion.V1:
        first, last = period.days
        where = [f'"eventday" BETWEEN {literal(first)} AND {literal(last)}']
    else:
        where = [
            f"\"time_dt\" >= TIMESTAMP '{period.start:%Y-%m-%d %H:%M:%S.%f}'",
            f"\"time_dt\" < TIMESTAMP '{period.end:%Y-%m-%d %H:%M:%S.%f}'",
        ]
    if query.accounts:
        where.append(f'"accountid" IN ({", ".join(literal(a) for a in query.accounts)})')
    return where


def _sample(inner: str, condition: str = "") -> str:
    # One more than a finding keeps, so the finding knows its sample was cut.
    return (
        f"json_format(CAST(slice(array_agg(DISTINCT e.{inner} ORDER BY e.{inner}) "
        f"FILTER (WHERE e.{inner} IS NOT NULL{condition}), 1, {MAX_VALUES + 1}) AS JSON))"
    )


def build(query: Query, allowlist: Allowlist) -> str:
    """The detection over ``query``'s table and period as one SELECT statement."""
    check_region(query.region)
    for account in query.accounts:
        if not _ACCOUNT.fullmatch(account):
            raise QueryInputInvalid(f"{account[:40]!r} is not a 12-digit AWS account id")
    cols = query.layout.columns
    repository, image_tag = _request_fields(query)
    inner = [f"{column(cols[k])} AS k_{k}" for k in GROUP_KEYS]
    inner += [
        f"{column(cols['time_ms'])} AS t",
        f"{column(cols['status'])} AS status",
        f"{repository} AS repository",
        f"{image_tag} AS image_tag",
        f"{column(cols['session_issuer'])} AS session_issuer",
        f"{column(cols['principal_id'])} AS principal_id",
        f"{column(cols['invoked_by'])} AS invoked_by",
    ]
    time = column(cols["time_ms"])
    where = [
        *_partition_filter(query),
        f"{time} >= {query.period.start_ms}",
        f"{time} < {query.period.end_ms}",
        f"{column(cols['operation'])} = 'PutImage'",
    ]
    identities = [column(cols[name]) for name in ("user", "session_issuer", "invoked_by")]
    trusted = [t for c in identities if (t := _trusted(c, allowlist)) is not None]
    domain = _trusted(column(cols["src_domain"]), allowlist)
    if domain is not None:
        # A push AWS made itself has no caller identity, only a source domain; the domain of a
        # row with any identity is never consulted (as in ``Allowlist.trust_mask``).
        no_identity = " AND ".join(f"{c} IS NULL" for c in identities)
        trusted.append(f"({no_identity} AND {domain})")
    if trusted:
        where.append("NOT (" + "\n      OR ".join(trusted) + ")")
    outer = [f"e.k_{k} AS {identifier(KEY_NAMES[k])}" for k in GROUP_KEYS]
    outer += [
        'count(*) AS "count"',
        'min(e.t) AS "firstTime"',
        'max(e.t) AS "lastTime"',
        "sum(CASE WHEN lower(e.status) = 'success' THEN 1 ELSE 0 END) AS \"succeeded\"",
        "sum(CASE WHEN lower(e.status) = 'failure' THEN 1 ELSE 0 END) AS \"failed\"",
    ]
    outer += [f"{_sample(src)} AS {identifier(name)}" for name, (src, _) in _SAMPLES.items()]
    ok = " AND lower(e.status) = 'success'"
    outer += [f"{_sample(src, ok)} AS {identifier(name)}" for name, (src, _) in _OK_SAMPLES.items()]
    sep = ",\n  "
    sql = (
        f"SELECT\n  {sep.join(outer)}\n"
        f"FROM (\n  SELECT\n    {(',' + chr(10) + '    ').join(inner)}\n"
        f"  FROM {identifier(query.database)}.{identifier(query.table)}\n"
        f"  WHERE {(chr(10) + '    AND ').join(where)}\n"
        ") AS e\n"
        f"GROUP BY {', '.join(f'e.k_{k}' for k in GROUP_KEYS)}\n"
        'ORDER BY "lastTime" DESC'
    )
    size = len(sql.encode("utf-8"))
    if size > MAX_QUERY_BYTES:
        raise QueryInputInvalid(
            f"the statement would be {size:,} bytes, more than Athena's {MAX_QUERY_BYTES:,}: "
            "the allowlist is too long for one query (use globs to shorten it)"
        )
    return sql


# --- results -----------------------------------------------------------------------------------


def _int(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ResultInvalid(f"column {name}: {value[:40]!r} is not an integer") from None


def _strings(value: str | None, name: str) -> list[str]:
    if value is None:
        return []
    try:
        data = json.loads(value)
    except ValueError:
        raise ResultInvalid(f"column {name}: not a JSON array") from None
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise ResultInvalid(f"column {name}: not a JSON array of strings")
    return data


def check_columns(names: Sequence[str]) -> None:
    """The result's column names, compared case-insensitively (Athena lowercases them)."""
    got = [n.lower() for n in names]
    want = [n.lower() for n in RESULT_COLUMNS]
    if got != want:
        raise ResultInvalid(f"unexpected result columns {got[:20]}, expected {want}")


def finding(row: Sequence[str | None]) -> Finding:
    """One result row (every value as text, None for SQL NULL) as a ``Finding``."""
    if len(row) != len(RESULT_COLUMNS):
        raise ResultInvalid(f"a result row has {len(row)} values, expected {len(RESULT_COLUMNS)}")
    values = dict(zip(RESULT_COLUMNS, row, strict=True))
    key = tuple(values[KEY_NAMES[k]] for k in GROUP_KEYS)
    out = Finding(
        key=key,
        count=_int(values["count"], "count") or 0,
        first_ms=_int(values["firstTime"], "firstTime"),
        last_ms=_int(values["lastTime"], "lastTime"),
        succeeded=_int(values["succeeded"], "succeeded") or 0,
        failed=_int(values["failed"], "failed") or 0,
    )
    for name, (_, attribute) in _OK_SAMPLES.items():
        getattr(out, attribute).add(_strings(values[name], name), priority=True)
    for name, (_, attribute) in _SAMPLES.items():
        getattr(out, attribute).add(_strings(values[name], name))
    return out


def findings(rows: Iterable[Sequence[str | None]]) -> list[Finding]:
    """Findings from result rows, in ``scan``'s order (most recent activity first)."""
    aggregate = Aggregate()
    for row in rows:
        f = finding(row)
        if f.key in aggregate.groups:  # not from this statement, but never lose counts
            aggregate.groups[f.key].merge(f)
        else:
            aggregate.groups[f.key] = f
    return aggregate.findings()


# --- cost --------------------------------------------------------------------------------------


def billed_bytes(scanned: int) -> int:
    """Bytes Athena bills for a query that scanned ``scanned``: whole MB, at least 10 MB."""
    return max(MIN_BILLED_BYTES, math.ceil(max(scanned, 0) / MB) * MB)


def cost_usd(scanned: int) -> float:
    return billed_bytes(scanned) / TB * PRICE_PER_TB_USD


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def cost_line(scanned: int) -> str:
    return (
        f"Athena scanned {human_bytes(scanned)}: about ${cost_usd(scanned):.4f} "
        f"(${PRICE_PER_TB_USD:g} per TB, at least 10 MB per query)"
    )
