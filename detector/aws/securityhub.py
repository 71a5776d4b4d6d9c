"""Security Hub adapter: import ASFF findings with ``BatchImportFindings``.

- At most 100 findings and 6 MB per call (the service's limits), so a run of any size is split.
- A finding can fail on its own while the call succeeds (``FailedCount``/``FailedFindings``):
  those are retried with exponential backoff, and whatever still fails raises ``PublishFailed``.
  Nothing is dropped silently.
- A throttled or failed call (``ClientError`` 5xx/throttling, connection errors) is retried the
  same way; an error that retrying cannot fix (access denied, Security Hub not enabled, invalid
  input) raises at once.
- A finding rejected for good (our own ``detector.asff.validate``, or Security Hub's
  ``InvalidInput``/access errors for that finding) does not hold the others back, nor the
  email: it is returned in ``Report.rejected`` with its Id and why, for the caller to log and
  count (metric ``SecurityHubRejected``). Only what a later attempt can cure raises.
- Batches are sent in parallel (``MAX_PARALLEL_BATCHES``), and no batch starts once
  ``deadline`` says the function's time is nearly up: it raises ``PublishFailed`` instead.

Retrying is safe: a re-import of the same ``Id`` updates the finding instead of adding one.
Decisions look at error codes and HTTP status only, never at message text.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from detector.asff import validate
from detector.errors import PublishFailed
from detector.output import safe_text

if TYPE_CHECKING:
    from mypy_boto3_securityhub import SecurityHubClient
    from mypy_boto3_securityhub.type_defs import AwsSecurityFindingUnionTypeDef

TARGET = "securityhub"
MAX_BATCH = 100
# 6 MB per call, less room for the request envelope.
MAX_BATCH_BYTES = 6 * 1024 * 1024 - 64 * 1024
MAX_PARALLEL_BATCHES = 4
BASE_DELAY = 0.5
MAX_DELAY = 8.0

# Error codes of a whole call that a later attempt can cure.
RETRYABLE_CALL_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "LimitExceededException",  # Security Hub's throttling error
        "RequestLimitExceeded",
        "InternalException",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# ``FailedFindings`` error codes that retrying cannot fix: the finding itself is rejected.
PERMANENT_FINDING_CODES = frozenset(
    {"InvalidInput", "InvalidInputException", "AccessDeniedException", "InvalidAccessException"}
)
# Enough of each failure for an operator to act on, without a huge exception message.
_MAX_REPORTED = 10


@dataclass
class Report:
    """What an import did: how many findings were imported, which were rejected for good."""

    imported: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (finding Id, why)


@dataclass
class _Batch:
    """What one batch did; ``failed`` findings (why in ``failures``) may import later."""

    imported: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    failed: int = 0
    cause: BaseException | None = None  # the error that made a call give up, if one did


class SecurityHubPublisher:
    def __init__(
        self,
        client: SecurityHubClient | None = None,
        *,
        max_attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._client = client
        self._lock = threading.Lock()
        self.max_attempts = max_attempts
        self.sleep = sleep

    @property
    def client(self) -> SecurityHubClient:
        # Batches are sent from several threads; building a boto3 client is not thread-safe.
        with self._lock:
            if self._client is None:
                self._client = boto3.client("securityhub")
            return self._client

    def publish(
        self,
        asff_findings: Sequence[Mapping[str, Any]],
        *,
        deadline: Callable[[], bool] | None = None,
    ) -> Report:
        """Import every finding, batches in parallel.

        Findings rejected for good are returned in ``Report.rejected``. Raises
        ``PublishFailed`` naming the findings a later attempt could still import (throttling,
        5xx, time running out per ``deadline``), once every batch has been tried.
        """
        report = Report()
        valid: list[Mapping[str, Any]] = []
        for i, finding in enumerate(asff_findings):
            try:
                validate(finding)
            except ValueError as exc:
                report.rejected.append((_finding_name(finding, i), f"invalid: {exc}"))
            else:
                valid.append(finding)
        batches = list(_batches(valid))

        def one(batch: list[Mapping[str, Any]]) -> _Batch:
            if deadline is not None and deadline():
                why = f"{len(batch)} finding(s) not sent: the function is out of time"
                return _Batch(failures=[why], failed=len(batch))
            return self._import(batch)

        failures: list[str] = []
        failed = 0
        cause: BaseException | None = None
        workers = max(1, min(MAX_PARALLEL_BATCHES, len(batches)))
        with ThreadPoolExecutor(workers, thread_name_prefix="securityhub") as pool:
            for result in pool.map(one, batches):
                report.imported += result.imported
                report.rejected += result.rejected
                failures += result.failures
                failed += result.failed
                cause = cause or result.cause
        if failures:
            raise PublishFailed(TARGET, _summary(failures, failed, report.imported)) from cause
        return report

    def _import(self, batch: list[Mapping[str, Any]]) -> _Batch:
        """One batch, retrying the findings that failed. What was imported or rejected before
        a call gives up is still counted."""
        result = _Batch()
        pending = batch
        failed: dict[str, str] = {}  # Id -> why it was not imported
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._call(pending, result.imported)
            except PublishFailed as exc:
                result.failures.append(exc.reason)
                result.failed += len(pending)
                result.cause = exc.__cause__
                return result
            errors = _errors(response, pending)
            retry = []
            for finding in pending:
                fid = str(finding.get("Id"))
                error = errors.get(fid)
                if error is None:
                    result.imported += 1
                    continue
                if str(error.get("ErrorCode")) in PERMANENT_FINDING_CODES:
                    result.rejected.append((safe_text(fid, 200), _describe_error(fid, error)))
                else:
                    failed[fid] = _describe_error(fid, error)
                    retry.append(finding)
            if not retry or attempt == self.max_attempts:
                break
            self.sleep(_delay(attempt))
            for finding in retry:
                failed.pop(str(finding.get("Id")), None)
            pending = retry
        result.failures += failed.values()
        result.failed += len(failed)
        return result

    def _call(self, findings: list[Mapping[str, Any]], before: int) -> Mapping[str, Any]:
        """``BatchImportFindings``, retrying the call itself when throttled or failing."""
        payload = cast("list[AwsSecurityFindingUnionTypeDef]", findings)
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self.client.batch_import_findings(Findings=payload)
            except ClientError as exc:
                if not _retryable(exc) or attempt == self.max_attempts:
                    raise PublishFailed(
                        TARGET, _call_failed(_error_code(exc), attempt, before, len(findings))
                    ) from exc
            except BotoCoreError as exc:
                if attempt == self.max_attempts:
                    raise PublishFailed(
                        TARGET, _call_failed(type(exc).__name__, attempt, before, len(findings))
                    ) from exc
            else:
                return cast("Mapping[str, Any]", response)
            self.sleep(_delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover


def _errors(
    response: Mapping[str, Any], pending: Sequence[Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]]:
    """Failed findings by Id. A failure counted but not listed marks the whole batch failed
    (with a retryable code), since which findings failed is then unknown."""
    errors = {
        str(e.get("Id")): e for e in response.get("FailedFindings") or [] if isinstance(e, Mapping)
    }
    if not errors and int(response.get("FailedCount") or 0) > 0:
        unknown = {"ErrorCode": "Unknown", "ErrorMessage": "counted in FailedCount, not listed"}
        errors = {str(f.get("Id")): unknown for f in pending}
    return errors


def _call_failed(code: str, attempts: int, before: int, size: int) -> str:
    return (
        f"BatchImportFindings failed ({code}) after {attempts} attempt(s); {size} finding(s) "
        f"of this batch not imported ({before} imported before)"
    )


def _batches(findings: Sequence[Mapping[str, Any]]) -> Iterator[list[Mapping[str, Any]]]:
    """Groups of at most ``MAX_BATCH`` findings and ``MAX_BATCH_BYTES`` of JSON."""
    batch: list[Mapping[str, Any]] = []
    size = 0
    for finding in findings:
        n = len(json.dumps(finding, ensure_ascii=False).encode("utf-8")) + 1
        if batch and (len(batch) >= MAX_BATCH or size + n > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(finding)
        size += n
    if batch:
        yield batch


def _delay(attempt: int) -> float:
    """Exponential backoff: 0.5 s, 1 s, 2 s, ... capped at ``MAX_DELAY``."""
    return float(min(MAX_DELAY, BASE_DELAY * 2 ** (attempt - 1)))


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "ClientError"))


def _retryable(exc: ClientError) -> bool:
    if _error_code(exc) in RETRYABLE_CALL_CODES:
        return True
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return isinstance(status, int) and (status >= 500 or status == 429)


def _describe_error(fid: str, err: Mapping[str, Any]) -> str:
    code = safe_text(err.get("ErrorCode") or "Unknown", 64)
    message = safe_text(err.get("ErrorMessage") or "", 300)
    return f"{safe_text(fid, 200)}: {code} {message}".rstrip()


def _finding_name(finding: Mapping[str, Any], index: int) -> str:
    fid = finding.get("Id") if isinstance(finding, Mapping) else None
    return safe_text(fid, 200) if fid else f"finding #{index}"


def _summary(failures: list[str], failed: int, imported: int) -> str:
    shown = "; ".join(failures[:_MAX_REPORTED])
    more = len(failures) - _MAX_REPORTED
    tail = f"; and {more} more" if more > 0 else ""
    return f"{failed} finding(s) failed: {shown}{tail} ({imported} imported)"
