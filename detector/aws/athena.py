"""Athena adapter: run one SQL statement and read its result (the backfill's query).

``StartQueryExecution``, then ``GetQueryExecution`` until the query ends (the interval grows from
0.5 s to 5 s; each poll is reported to a progress callback with the state and the bytes scanned
so far), then ``GetQueryResults`` page by page. A query that ends ``FAILED`` or ``CANCELLED``
raises ``QueryFailed`` with Athena's ``StateChangeReason``; an API error raises
``AthenaUnavailable`` with its code. Throttling and 5xx are retried by botocore's standard mode.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from detector.analysis.output import safe_text
from detector.core.errors import DetectorError

if TYPE_CHECKING:
    from mypy_boto3_athena import AthenaClient
    from mypy_boto3_athena.type_defs import ResultConfigurationTypeDef

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 8})
RUNNING_STATES = frozenset({"QUEUED", "RUNNING"})
# Polling interval: starts short (small queries end in seconds), grows to the cap.
FIRST_POLL_S = 0.5
MAX_POLL_S = 5.0


class AthenaUnavailable(DetectorError):
    """An Athena API call failed (access denied, unknown workgroup, invalid request...)."""


@dataclass(frozen=True)
class QueryStatus:
    query_id: str
    state: str
    reason: str = ""
    scanned_bytes: int = 0
    engine_ms: int = 0
    output_location: str | None = None


class QueryFailed(DetectorError):
    """The query ended FAILED or CANCELLED; ``status`` says why and what it scanned."""

    def __init__(self, status: QueryStatus) -> None:
        # Athena's reason may quote the query (and so allowlist entries): one safe line.
        reason = safe_text(status.reason, 1000) if status.reason else "no reason given"
        super().__init__(f"Athena query {status.query_id} {status.state}: {reason}")
        self.status = status


@dataclass
class QueryResult:
    columns: list[str] = field(default_factory=list)
    rows: list[list[str | None]] = field(default_factory=list)


def _code(exc: ClientError) -> str:
    err = exc.response.get("Error", {})
    text = f"{err.get('Code', 'ClientError')}: {err.get('Message', '')}".strip(": ")
    return safe_text(text, 500)


class AthenaQueries:
    """Runs statements in one region's Athena."""

    def __init__(
        self,
        region: str,
        client: AthenaClient | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        first_poll: float | None = None,
        max_poll: float | None = None,
    ) -> None:
        self.region = region
        self._client = client
        self._sleep = sleep
        self.first_poll = FIRST_POLL_S if first_poll is None else first_poll
        self.max_poll = MAX_POLL_S if max_poll is None else max_poll

    @property
    def client(self) -> AthenaClient:
        if self._client is None:
            self._client = boto3.client("athena", region_name=self.region, config=_RETRIES)
        return self._client

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            raise AthenaUnavailable(f"Athena {what}: {_code(exc)}") from exc
        except BotoCoreError as exc:
            raise AthenaUnavailable(f"Athena {what}: {exc}") from exc

    def start(self, sql: str, *, workgroup: str, output: str | None = None) -> str:
        """Submit ``sql``; its QueryExecutionId."""
        config: ResultConfigurationTypeDef = {}
        if output:
            config["OutputLocation"] = output
        response = self._call(
            "StartQueryExecution",
            self.client.start_query_execution,
            QueryString=sql,
            WorkGroup=workgroup,
            ResultConfiguration=config,
            # Idempotent across botocore's retries of this one call.
            ClientRequestToken=str(uuid.uuid4()),
        )
        return str(response["QueryExecutionId"])

    def status(self, query_id: str) -> QueryStatus:
        execution = self._call(
            "GetQueryExecution", self.client.get_query_execution, QueryExecutionId=query_id
        )["QueryExecution"]
        state = execution.get("Status", {})
        stats = execution.get("Statistics", {})
        return QueryStatus(
            query_id=query_id,
            state=str(state.get("State", "UNKNOWN")),
            reason=str(state.get("StateChangeReason", "")),
            scanned_bytes=int(stats.get("DataScannedInBytes", 0) or 0),
            engine_ms=int(stats.get("EngineExecutionTimeInMillis", 0) or 0),
            output_location=execution.get("ResultConfiguration", {}).get("OutputLocation"),
        )

    def wait(
        self, query_id: str, progress: Callable[[QueryStatus], None] | None = None
    ) -> QueryStatus:
        """Poll until the query ends; its final status, or ``QueryFailed``."""
        delay = self.first_poll
        while True:
            status = self.status(query_id)
            if progress is not None:
                progress(status)
            if status.state not in RUNNING_STATES:
                break
            self._sleep(delay)
            delay = min(delay * 1.5, self.max_poll)
        if status.state != "SUCCEEDED":  # FAILED, CANCELLED (or a state unknown to us)
            raise QueryFailed(status)
        return status

    def stop(self, query_id: str) -> None:
        """Cancel a query (best effort: used when the user interrupts the wait)."""
        try:
            self.client.stop_query_execution(QueryExecutionId=query_id)
        except (ClientError, BotoCoreError):
            return

    def results(self, query_id: str) -> QueryResult:
        """Every result row, values as text (None for SQL NULL), the header row left out."""
        out = QueryResult()
        paginator = self.client.get_paginator("get_query_results")
        try:
            for page_no, page in enumerate(paginator.paginate(QueryExecutionId=query_id)):
                result_set = page.get("ResultSet", {})
                rows = result_set.get("Rows", [])
                if page_no == 0:
                    info = result_set.get("ResultSetMetadata", {}).get("ColumnInfo", [])
                    out.columns = [str(c.get("Label") or c.get("Name") or "") for c in info]
                    # A SELECT's first row holds the column names.
                    if rows and _lower(_values(rows[0])) == _lower(out.columns):
                        rows = rows[1:]
                out.rows.extend(_values(r) for r in rows)
        except ClientError as exc:
            raise AthenaUnavailable(f"Athena GetQueryResults: {_code(exc)}") from exc
        except BotoCoreError as exc:
            raise AthenaUnavailable(f"Athena GetQueryResults: {exc}") from exc
        return out


def _lower(values: list[str] | list[str | None]) -> list[str]:
    return [(v or "").lower() for v in values]


def _values(row: Any) -> list[str | None]:
    return [d.get("VarCharValue") if isinstance(d, dict) else None for d in row.get("Data", [])]
