"""A detection as one Athena (Trino) SQL statement, for a backfill over Security Lake history.

The statement computes what ``scan`` computes for one detection (``detector.core.spec.Detection``),
over the Glue table of one source version: calls of the operations the detection watches that
its ``sql_predicate`` reports (for the default detection: calls whose caller ARN, session issuer
and calling service all miss the allowlist and, for calls with none of those, whose source
domain misses it too), grouped by the same seven keys (a null key is a group of its own), with
the count, first and last time, success/failure counts and samples (the detection's own, then
session issuers, principal ids, calling services; the detection's samples also over successful
calls only). Its result columns carry the ``scan --format jsonl`` names (``result_columns``).
Several detections are several statements: one each.

- The scan is limited by the table's partitions: v1 (``cloud_trail_mgmt_1_0``) is partitioned
  by ``region``, ``accountid`` and ``eventday`` (``yyyymmdd`` string); v2 (``…_2_0``, Iceberg)
  by ``region``, ``accountid`` and ``time_dt``. Only the days asked for (and the accounts, when
  given) are read; ``time`` then cuts the period exactly.
- ``firstTime``/``lastTime`` are epoch **milliseconds** (UTC): no date formatting function is
  common to Trino and DuckDB, so ``backfill`` formats them like ``scan`` does.
- Allowlist entries become SQL literals (``detector.core.sqlparts``): exact entries in ``IN (…)``,
  globs as ``LIKE`` with ``ESCAPE '\\'`` (``*`` → ``%``, ``?`` → ``_``, a literal ``%``, ``_`` or
  ``\\`` escaped). ``LIKE`` is case-sensitive and whole-value in Trino and DuckDB, like the
  allowlist; a null never matches. Quotes are doubled; anything but printable ASCII is refused.
- Only constructs Trino and DuckDB share, plus the Trino functions the tests map onto DuckDB
  (``element_at`` on a map, ``json_extract_scalar``, ``slice``, ``json_format``, and those a
  detection's predicate uses): the tests run the statement on local Parquet and compare it with
  ``scan``.

Differences from ``scan``, on purpose or by nature: no event ids and no source objects (reading
``metadata.uid`` for every row would add a high-entropy column to the bytes billed), and events
without a ``time`` are outside every period.

Reading the result rows back as findings, and what a query costs, is ``athena_results``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from detector import detections
from detector.analysis.athena_results import _GENERIC_SAMPLES, result_columns
from detector.analysis.findings import KEY_NAMES, MAX_VALUES
from detector.core import requestjson
from detector.core.allowlist import Allowlist
from detector.core.spec import Active, Detection, Threshold
from detector.core.sqlparts import QueryInputInvalid, column, identifier, like_pattern, literal
from detector.lake.schema import GROUP_KEYS, V1, V2, Layout, SchemaVersion

__all__ = [
    "Period",
    "Query",
    "QueryInputInvalid",
    "build",
    "check_region",
    "column",
    "identifier",
    "like_pattern",
    "literal",
    "parse_accounts",
    "parse_version",
]

# StartQueryExecution takes at most 256 KiB of query text.
MAX_QUERY_BYTES = 262_144

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]")
_ACCOUNT = re.compile(r"[0-9]{12}")  # not \d: that takes any script's digits
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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

# A request parameter key that can go into a map key and a JSON path as it is.
_REQUEST_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# An internal column name usable as a bare alias (anything else is quoted).
_BARE = re.compile(r"[a-z][a-z0-9_]*")
# Words Trino or DuckDB reserve that a bare alias could be: quoted instead.
_RESERVED = frozenset(
    """all alter analyse analyze and any array as asc asymmetric between both by case cast
    check collate column constraint create cross cube current_catalog current_date
    current_path current_role current_schema current_time current_timestamp current_user
    deallocate default deferrable delete desc describe distinct do drop else end escape
    except execute exists extract false fetch for foreign from full grant group grouping
    having in initially inner insert intersect into is join lateral leading left like
    limit listagg localtime localtimestamp natural normalize not null offset on only or
    order outer placing prepare primary recursive references returning right rollup select
    session_user skip some symmetric table then to trailing trim true uescape union unique
    unnest user using values variadic when where window with""".split()  # noqa: SIM905
)


def _alias(name: str) -> str:
    return name if _BARE.fullmatch(name) and name not in _RESERVED else identifier(name)


def _request_field(layout: Layout, key: str, source: str = "request", path: str = "") -> str:
    """SQL for the request parameter ``key`` out of the request column of ``layout`` (or, with
    ``source`` ``response``, the value at the dotted ``path`` of the response)."""
    if source == "response":
        return _response_field(layout, path or key)
    if not _REQUEST_KEY.fullmatch(key):
        raise QueryInputInvalid(f"request parameter {key[:80]!r} cannot go into the query")
    request = column(layout.columns["request"])
    if layout.version is SchemaVersion.V1:
        # v1 data holds request parameters in the ``unmapped`` map in two layouts, possibly
        # mixed: flattened (``requestParameters.<key>``) or one whole JSON value
        # (``requestParameters``, as AWS's v1 query examples read it). A flattened value wins,
        # as in ``schema.request_fields``. element_at gives null for a missing key, where the
        # subscript operator would fail the query; json_extract_scalar gives null for bad JSON.
        whole = f"element_at({request}, 'requestParameters')"
        return (
            f"coalesce(element_at({request}, {literal('requestParameters.' + key)}), "
            f"json_extract_scalar({whole}, {literal('$.' + key)}))"
        )
    return f"json_extract_scalar({request}, {literal('$.' + key)})"


def _response_field(layout: Layout, path: str) -> str:
    """SQL for the value at dotted ``path`` of the response (v2 ``api.response.data``; v1
    ``unmapped``: flattened ``responseElements.<path>``, else the whole JSON value)."""
    if not all(_REQUEST_KEY.fullmatch(part) for part in path.split(".")):
        raise QueryInputInvalid(f"response path {path[:80]!r} cannot go into the query")
    if layout.version is SchemaVersion.V1:
        unmapped = column(layout.columns["request"])
        whole = f"element_at({unmapped}, 'responseElements')"
        return (
            f"coalesce(element_at({unmapped}, {literal('responseElements.' + path)}), "
            f"json_extract_scalar({whole}, {literal('$.' + path)}))"
        )
    return f"json_extract_scalar({column(layout.columns['response'])}, {literal('$.' + path)})"


def columns(layout: Layout, detection: Detection) -> dict[str, str]:
    """Internal column name → SQL expression over a table of ``layout``: every layout column
    (``schema.GENERIC``) and the detection's request fields. What a ``sql_predicate`` gets."""
    cols = {
        name: column(path)
        for name, path in layout.columns.items()
        if name not in ("request", "response")
    }
    for request_field in detection.request_fields:
        if request_field.column in cols:
            raise QueryInputInvalid(
                f"{detection.slug}: request field {request_field.column!r} shadows a column"
            )
        cols[request_field.column] = _request_field(
            layout, request_field.key, request_field.source, request_field.path
        )
    return cols


def reports_every_call(active: Active, allowlist: Allowlist) -> bool:
    """True when ``active`` reports every call of the operations it watches with ``allowlist``
    (its SQL predicate is None), e.g. an allowlist detection with an empty allowlist."""
    cols = columns(V2, active.detection)
    return active.detection.sql_predicate(cols, active.context(allowlist)) is None


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


def _operations(expression: str, operations: Sequence[str]) -> str | None:
    if not operations:  # a detection of every operation: its predicate decides alone
        return None
    if len(operations) == 1:
        return f"{expression} = {literal(operations[0])}"
    return f"{expression} IN ({', '.join(literal(o) for o in operations)})"


def request_condition(layout: Layout, detection: Detection) -> str | None:
    """The detection's request test (``requestjson``) as SQL over the request column of
    ``layout``: v2's JSON; v1's whole JSON or its flattened ``unmapped`` entries."""
    cond = detection.request_test
    if cond is None:
        return None
    request = column(layout.columns["request"])
    if layout.version is SchemaVersion.V2:
        return requestjson.json_sql(cond, request, lambda path: _json_text(request, path))
    whole = f"element_at({request}, 'requestParameters')"
    flat = requestjson.flattened_sql(
        cond, lambda key: f"element_at({request}, {literal('requestParameters.' + key)})"
    )
    in_whole = requestjson.json_sql(cond, whole, lambda path: _json_text(whole, path))
    return f"({flat} OR {in_whole})"


def _json_text(doc: str, path: str) -> str:
    if not all(_REQUEST_KEY.fullmatch(part) for part in path.split(".")):
        raise QueryInputInvalid(f"request path {path[:80]!r} cannot go into the query")
    return f"json_extract_scalar({doc}, {literal('$.' + path)})"


def _bucket(time: str, bucket_ms: int) -> str:
    """The start of a time's bucket, in doubles like ``findings.bucket_of`` (a literal such as
    3600000.0 would be a DECIMAL in Trino, rounding the quotient to one place); no bucket past
    2^53 ms, where doubles stop being exact."""
    return (
        f"CASE WHEN {time} BETWEEN -{_EXACT} AND {_EXACT} THEN "
        f"CAST(floor(CAST({time} AS DOUBLE) / CAST({bucket_ms} AS DOUBLE)) * {bucket_ms} "
        "AS BIGINT) END"
    )


_EXACT = 2**53


def _sample(inner: str, condition: str = "") -> str:
    # One more than a finding keeps, so the finding knows its sample was cut.
    return (
        f"json_format(CAST(slice(array_agg(DISTINCT e.{inner} ORDER BY e.{inner}) "
        f"FILTER (WHERE e.{inner} IS NOT NULL{condition}), 1, {MAX_VALUES + 1}) AS JSON))"
    )


def build(query: Query, allowlist: Allowlist, active: Active | None = None) -> str:
    """``active`` (None: the default detection) over ``query``'s table and period as one
    SELECT statement."""
    check_region(query.region)
    for account in query.accounts:
        if not _ACCOUNT.fullmatch(account):
            raise QueryInputInvalid(f"{account[:40]!r} is not a 12-digit AWS account id")
    if active is None:
        active = detections.default()[0]
    detection = active.detection
    names = result_columns(detection)
    cols = columns(query.layout, detection)
    # Inner (per-row) columns: the grouping keys, time and status under fixed names, then every
    # column a sample keeps, each once, under its own name.
    aliases: dict[str, str] = {k: f"k_{k}" for k in GROUP_KEYS}
    aliases |= {"time_ms": "t", "status": "status"}
    inner = [f"{cols[k]} AS k_{k}" for k in GROUP_KEYS]
    # Callers recorded without an ARN are told apart by principal id, as ``scan`` does
    # (``Finding.anon``); the column is grouped by, not returned.
    inner.append(f"CASE WHEN {cols['user']} IS NULL THEN {cols['principal_id']} END AS k_anon")
    inner += [f"{cols['time_ms']} AS t", f"{cols['status']} AS status"]
    rule = detection.threshold
    if rule is not None:
        inner.append(f"{_bucket(cols['time_ms'], rule.bucket_ms)} AS k_bucket")
    extra = detection.extra_samples
    sampled = [s.column for s in (*detection.samples, *extra)] + [c for _, c in _GENERIC_SAMPLES]
    for name in sampled:
        if name in aliases:
            continue
        if name not in cols:
            raise QueryInputInvalid(f"{detection.slug}: no column {name!r} to sample")
        aliases[name] = _alias(name)
        inner.append(f"{cols[name]} AS {aliases[name]}")
    time = cols["time_ms"]
    where = [
        *_partition_filter(query),
        f"{time} >= {query.period.start_ms}",
        f"{time} < {query.period.end_ms}",
    ]
    watched = _operations(cols["operation"], detection.operations)
    if watched is not None:
        where.append(watched)
    condition = detection.sql_predicate(cols, active.context(allowlist))
    if condition is not None:
        where.append(condition)
    tested = request_condition(query.layout, detection)
    if tested is not None:
        where.append(tested)
    outer = [f"e.k_{k} AS {identifier(KEY_NAMES[k])}" for k in GROUP_KEYS]
    outer += [
        'count(*) AS "count"',
        'min(e.t) AS "firstTime"',
        'max(e.t) AS "lastTime"',
        "sum(CASE WHEN lower(e.status) = 'success' THEN 1 ELSE 0 END) AS \"succeeded\"",
        "sum(CASE WHEN lower(e.status) = 'failure' THEN 1 ELSE 0 END) AS \"failed\"",
    ]
    outer += [f"{_sample(aliases[s.column])} AS {identifier(s.name)}" for s in detection.samples]
    outer += [f"{_sample(aliases[c])} AS {identifier(name)}" for name, c in _GENERIC_SAMPLES]
    ok = " AND lower(e.status) = 'success'"
    outer += [
        f"{_sample(aliases[s.column], ok)} AS {identifier(s.succeeded_key)}"
        for s in detection.samples
    ]
    outer += [f"{_sample(aliases[s.column])} AS {identifier(s.name)}" for s in extra]
    outer += [f"{_sample(aliases[s.column], ok)} AS {identifier(s.succeeded_key)}" for s in extra]
    groups = [*GROUP_KEYS, "anon"]
    if rule is not None:
        outer.append('e.k_bucket AS "bucket"')
        groups.append("bucket")
    assert len(outer) == len(names)
    sep = ",\n  "
    sql = (
        f"SELECT\n  {sep.join(outer)}\n"
        f"FROM (\n  SELECT\n    {(',' + chr(10) + '    ').join(inner)}\n"
        f"  FROM {identifier(query.database)}.{identifier(query.table)}\n"
        f"  WHERE {(chr(10) + '    AND ').join(where)}\n"
        ") AS e\n"
        f"GROUP BY {', '.join(f'e.k_{k}' for k in groups)}"
    )
    if rule is not None:
        sql = _past_threshold(sql, rule)
    sql += '\nORDER BY "lastTime" DESC'

    size = len(sql.encode("utf-8"))
    if size > MAX_QUERY_BYTES:
        raise QueryInputInvalid(
            f"the statement would be {size:,} bytes, more than Athena's {MAX_QUERY_BYTES:,}: "
            "the allowlist is too long for one query (use globs to shorten it)"
        )
    return sql


def _past_threshold(grouped: str, rule: Threshold) -> str:
    """The groups whose (bucket, caller ARN) reach the threshold over all their groups, as
    ``findings.reported`` keeps them: GROUP BY bucket, user HAVING count (or distinct) >= N."""
    user = identifier(KEY_NAMES["user"])
    if rule.distinct is None:
        measure = 'sum(g."count")'
    else:
        measure = f"count(DISTINCT g.{identifier(KEY_NAMES[rule.distinct])})"
    # Every part is this module's text, identifiers and literals made above.
    return (
        f"SELECT g.* FROM (\n{grouped}\n) AS g\n"  # noqa: S608
        f'JOIN (\n  SELECT g."bucket" AS tb, g.{user} AS tu FROM (\n{grouped}\n  ) AS g\n'
        f'  GROUP BY g."bucket", g.{user}\n  HAVING {measure} >= {rule.minimum}\n) AS t\n'
        f'ON g."bucket" = t.tb AND g.{user} IS NOT DISTINCT FROM t.tu'
    )
