"""DuckDB playing Athena: generated Security Lake objects registered under the Glue names, and
the Trino functions the statements use that DuckDB lacks (or has with another meaning).

- ``element_at`` on a map: DuckDB's returns a list, so the text is rewritten to
  ``map_extract_value`` (``trino_on_duckdb``);
- ``json_extract_scalar`` (null on bad JSON, like Trino), ``slice`` and ``json_format``;
- ``json_exists(json, path)`` (request tests): ``tests.sqljson``, Trino's SQL/JSON path subset;
- for time-of-day predicates, ``from_unixtime(seconds, zone)``: Trino's timestamp with that time
  zone, whose ``hour``, ``minute`` and ``day_of_week`` are local; here the local timestamp itself
  (DuckDB's ICU extension is built in, so named zones work offline), and ``day_of_week`` (ISO:
  Monday is 1). ``hour`` and ``minute`` are DuckDB's own.

Everything else runs as written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb

from detector.analysis import athena_results, athena_sql
from detector.analysis.findings import Finding
from detector.core.spec import Detection
from tests import sqljson

REGION = "us-east-1"


def trino_on_duckdb(sql: str) -> str:
    # element_at(map, key) is the one function DuckDB has under the same name with another
    # result type; json_exists is DuckDB's too, with a path language of its own. The
    # allowlist literals in these tests never contain the texts.
    return (
        sql.replace("element_at(", "map_extract_value(")
        .replace("json_exists(", "sqljson_exists(")
        .replace("json_parse(", "trino_json_parse(")
    )


def athena_on_duckdb(files: Sequence[tuple[Path, int]]) -> duckdb.DuckDBPyConnection:
    """DuckDB with the lake's objects as the two Glue tables, and Trino's functions."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    db = f"amazon_security_lake_glue_db_{REGION.replace('-', '_')}"
    con.execute(f"CREATE SCHEMA {db}")
    for version in (1, 2):
        paths = [str(p) for p, v in files if v == version]
        if not paths:
            continue
        listing = ", ".join(athena_sql.literal(p) for p in paths)
        name = f"amazon_security_lake_table_{REGION.replace('-', '_')}_cloud_trail_mgmt_{version}_0"
        table = f"{db}.{name}"
        if version == 1:
            # v1 partitions (region, accountid, eventday) come from the key, as in Glue.
            source = (
                f"read_parquet([{listing}], hive_partitioning = true, hive_types_autocast = false)"
            )
        else:
            # v2 objects carry accountid and region; time_dt is the time partition.
            source = f"read_parquet([{listing}], hive_partitioning = false)"
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM {source}")
    con.execute("CREATE MACRO json_extract_scalar(j, p) AS TRY(json_extract_string(j, p))")
    con.execute("CREATE MACRO slice(l, s, n) AS list_slice(l, s, s + n - 1)")
    con.execute("CREATE MACRO json_format(j) AS CAST(j AS VARCHAR)")
    con.execute("CREATE MACRO from_unixtime(s, z) AS timezone(z, to_timestamp(s))")
    con.execute("CREATE MACRO day_of_week(ts) AS isodow(ts)")
    con.create_function(
        "trino_json_parse",
        _json_parse,
        [duckdb.sqltype("VARCHAR")],
        duckdb.sqltype("VARCHAR"),
    )
    con.create_function(
        "sqljson_exists",
        sqljson.json_exists,
        [duckdb.sqltype("VARCHAR"), duckdb.sqltype("VARCHAR")],
        duckdb.sqltype("BOOLEAN"),
    )
    return con


def _json_parse(text: str | None) -> str | None:
    """Trino's ``json_parse`` (escapes decoded), as the canonical text ``json_format`` gives;
    null where Trino fails (``try`` makes that null)."""
    import json

    if text is None:
        return None
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError):
        return None


def rows_of(
    con: duckdb.DuckDBPyConnection, sql: str, detection: Detection | None = None
) -> list[Any]:
    """Run the statement and read its rows the way ``backfill`` reads Athena's: all text."""
    cursor = con.execute(trino_on_duckdb(sql))
    athena_results.check_columns([d[0] for d in cursor.description], detection)
    return [[None if v is None else str(v) for v in row] for row in cursor.fetchall()]


def run_sql(
    con: duckdb.DuckDBPyConnection, sql: str, detection: Detection | None = None
) -> list[Finding]:
    """The statement's findings (of ``detection``, None: the default)."""
    return athena_results.findings(rows_of(con, sql, detection), detection)


def comparable(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    """Every field both compute (scan also keeps event ids and source objects)."""
    out = []
    for f in findings:
        rec = f.to_record()
        del rec["event_ids"], rec["source_objects"]
        out.append(rec)
    return sorted(out, key=repr)
