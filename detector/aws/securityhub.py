"""Security Hub adapter: import ASFF findings with ``BatchImportFindings``.

- At most 100 findings and 6 MB per call (the service's limits), so a run of any size is split.
- A finding can fail on its own while the call succeeds (``FailedCount``/``FailedFindings``):
  those are retried with jittered exponential backoff, and whatever still fails is reported
  (``Report.failed``). Nothing is dropped silently.
- A throttled or failed call (``ClientError`` 5xx/throttling, connection errors) is retried:
  first by botocore itself (``retries={"mode": "adaptive"}``: full-jitter backoff, and a
  client-side rate limiter that slows this client down when Security Hub throttles it, so
  concurrent invocations back off instead of spending their attempts in lockstep against the
  quota of 10 requests a second, burst 30), then by this adapter with jittered backoff. An error
  that retrying cannot fix (access denied, Security Hub not enabled, invalid input) stops at
  once.
- A finding rejected for good (our own ``detector.report.asff_checks.validate``, or Security Hub's
  ``InvalidInput``/access errors for that finding) does not hold the others back, nor the
  email: it is returned in ``Report.rejected`` with its Id and why, for the caller to log and
  count (metric ``SecurityHubRejected``).
- Batches are sent in parallel (``MAX_PARALLEL_BATCHES``), and no batch or retry starts once
  ``deadline`` says the function's time is nearly up.
- ``deliver`` says what happened to every finding and never raises for Security Hub's sake:
  imported, ``rejected`` (for good, per finding), ``failed`` (a later attempt may import it:
  throttling, 5xx, unreachable, out of time) or ``blocked`` (the call was refused for good:
  Security Hub not enabled, access denied). ``publish`` raises ``SecurityHubFailed`` (a
  ``PublishFailed`` carrying that report) when anything failed or was blocked.

Retrying is safe: a re-import of the same ``Id`` updates the finding instead of adding one.
Decisions look at error codes and HTTP status only, never at message text.

``WorkflowReader`` reads back the workflow status people set on our findings (for
``detector.report.mutes``): ``GetFindings`` with up to 20 finding ids a call, never per finding, and
never raising.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from detector.analysis.output import safe_text
from detector.core.errors import PublishFailed
from detector.report.asff_checks import validate
from detector.report.mutes import WorkflowRead

if TYPE_CHECKING:
    from mypy_boto3_securityhub import SecurityHubClient
    from mypy_boto3_securityhub.type_defs import AwsSecurityFindingUnionTypeDef

TARGET = "securityhub"
MAX_BATCH = 100  # BatchImportFindings' maximum
# 6 MB per call, less room for the request envelope.
MAX_BATCH_BYTES = 6 * 1024 * 1024 - 64 * 1024
MAX_PARALLEL_BATCHES = 4
BASE_DELAY = 0.5
MAX_DELAY = 8.0
# The default client's retries: adaptive mode (standard retries with full-jitter backoff, plus
# client-side rate limiting that adapts to throttling responses). Each attempt botocore makes is
# one of ours, so a throttled call gets at most MAX_CLIENT_ATTEMPTS x max_attempts tries.
MAX_CLIENT_ATTEMPTS = 4
CLIENT_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": MAX_CLIENT_ATTEMPTS})

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
    """What an import did: how many findings were imported, which were rejected for good, which
    a later attempt may still import, and which Security Hub refused to take at all.

    Every list holds (finding Id, why), the Id escaped as in ``rejected``. ``disabled``: there
    is no Security Hub to write to (``SECURITY_HUB_ENABLED=false``), nothing was tried.
    """

    imported: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    blocked: list[tuple[str, str]] = field(default_factory=list)
    disabled: bool = False


class SecurityHubFailed(PublishFailed):
    """Some findings were not imported: ``report`` says which, and whether retrying may help."""

    def __init__(self, reason: str, report: Report) -> None:
        super().__init__(TARGET, reason)
        self.report = report


class _CallFailed(PublishFailed):
    """A ``BatchImportFindings`` call gave up; ``retryable``: a later attempt may succeed."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(TARGET, reason)
        self.retryable = retryable


@dataclass
class _Batch:
    """What one batch did; ``failed`` findings (why in ``failures``) may import later."""

    imported: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    blocked: list[tuple[str, str]] = field(default_factory=list)
    cause: BaseException | None = None  # the error that made a call give up, if one did


class SecurityHubPublisher:
    def __init__(
        self,
        client: SecurityHubClient | None = None,
        *,
        max_attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._client = client
        self._lock = threading.Lock()
        self.max_attempts = max_attempts
        self.sleep = sleep
        self.rand = rand  # in [0, 1): the jitter of each backoff

    @property
    def client(self) -> SecurityHubClient:
        # Batches are sent from several threads; building a boto3 client is not thread-safe.
        with self._lock:
            if self._client is None:
                self._client = boto3.client("securityhub", config=CLIENT_CONFIG)
            return self._client

    def publish(
        self,
        asff_findings: Sequence[Mapping[str, Any]],
        *,
        deadline: Callable[[], bool] | None = None,
    ) -> Report:
        """Import every finding, batches in parallel.

        Findings rejected for good are returned in ``Report.rejected``. Raises
        ``SecurityHubFailed`` naming the findings that were not imported (throttling, 5xx,
        time running out per ``deadline``, Security Hub refusing the call), once every batch
        has been tried; its ``report`` tells them apart.
        """
        report, failures, cause = self._deliver(asff_findings, deadline)
        if failures:
            missed = len(report.failed) + len(report.blocked)
            reason = _summary(failures, missed, report.imported)
            raise SecurityHubFailed(reason, report) from cause
        return report

    def deliver(
        self,
        asff_findings: Sequence[Mapping[str, Any]],
        *,
        deadline: Callable[[], bool] | None = None,
    ) -> Report:
        """Like ``publish``, but what was not imported is only reported, never raised."""
        return self._deliver(asff_findings, deadline)[0]

    def _deliver(
        self,
        asff_findings: Sequence[Mapping[str, Any]],
        deadline: Callable[[], bool] | None,
    ) -> tuple[Report, list[str], BaseException | None]:
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
                return _out_of_time(batch)
            return self._import(batch, deadline)

        failures: list[str] = []
        cause: BaseException | None = None
        workers = max(1, min(MAX_PARALLEL_BATCHES, len(batches)))
        with ThreadPoolExecutor(workers, thread_name_prefix="securityhub") as pool:
            for result in pool.map(one, batches):
                report.imported += result.imported
                report.rejected += result.rejected
                report.failed += result.failed
                report.blocked += result.blocked
                failures += result.failures
                cause = cause or result.cause
        return report, failures, cause

    def _import(
        self, batch: list[Mapping[str, Any]], deadline: Callable[[], bool] | None = None
    ) -> _Batch:
        """One batch, retrying the findings that failed. What was imported or rejected before
        a call gives up is still counted."""
        result = _Batch()
        pending = batch
        failed: dict[str, str] = {}  # Id -> why it was not imported
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._call(pending, result.imported, deadline)
            except _CallFailed as exc:
                result.failures.append(exc.reason)
                missed = [(_finding_name(f, i), exc.reason) for i, f in enumerate(pending)]
                if exc.retryable:
                    result.failed += missed
                else:
                    result.blocked += missed
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
            if deadline is not None and deadline():
                break  # no time for another attempt: they stay failed, a retry imports them
            self.sleep(_delay(attempt, self.rand()))
            for finding in retry:
                failed.pop(str(finding.get("Id")), None)
            pending = retry
        result.failures += failed.values()
        result.failed += [(safe_text(fid, 200), why) for fid, why in failed.items()]
        return result

    def _call(
        self,
        findings: list[Mapping[str, Any]],
        before: int,
        deadline: Callable[[], bool] | None = None,
    ) -> Mapping[str, Any]:
        """``BatchImportFindings``, retrying the call itself when throttled or failing."""
        payload = cast("list[AwsSecurityFindingUnionTypeDef]", findings)
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self.client.batch_import_findings(Findings=payload)
            except ClientError as exc:
                retryable = _retryable(exc)
                if not retryable or attempt == self.max_attempts or _late(deadline):
                    raise _CallFailed(
                        _call_failed(_error_code(exc), attempt, before, len(findings)),
                        retryable=retryable,
                    ) from exc
            except BotoCoreError as exc:
                if attempt == self.max_attempts or _late(deadline):
                    raise _CallFailed(
                        _call_failed(type(exc).__name__, attempt, before, len(findings)),
                        retryable=True,
                    ) from exc
            else:
                return cast("Mapping[str, Any]", response)
            self.sleep(_delay(attempt, self.rand()))
        raise AssertionError("unreachable")  # pragma: no cover


def _late(deadline: Callable[[], bool] | None) -> bool:
    return deadline is not None and deadline()


def _out_of_time(batch: list[Mapping[str, Any]]) -> _Batch:
    why = f"{len(batch)} finding(s) not sent: the function is out of time"
    failed = [(_finding_name(f, i), why) for i, f in enumerate(batch)]
    return _Batch(failures=[why], failed=failed)


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


def _delay(attempt: int, jitter: float = 1.0) -> float:
    """Exponential backoff with equal jitter: up to 0.5 s, 1 s, 2 s, ... (capped at
    ``MAX_DELAY``), at least half of it. ``jitter`` in [0, 1] picks where in between, so
    invocations throttled together do not all come back at the same moment."""
    ceiling = float(min(MAX_DELAY, BASE_DELAY * 2 ** (attempt - 1)))
    return ceiling / 2 + ceiling / 2 * min(1.0, max(0.0, jitter))


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


# --- workflow status: what people triaging did with our findings ------------------------------

# GetFindings takes up to 20 values per filter attribute: one call reads 20 findings.
MAX_IDS_PER_READ = 20
# GetFindings allows 3 requests a second (burst 6) per account and Region: at most this many
# calls per invocation (200 alerts); the rest are reported unread (emailed as if not muted).
MAX_READ_CALLS = 10
# The read is in the email's path: a few quick attempts, then the email goes out regardless.
READ_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10
)


class WorkflowReader:
    """Reads the workflow status (``Workflow.Status``: NEW, NOTIFIED, SUPPRESSED, RESOLVED) of
    our findings with ``GetFindings``, ``MAX_IDS_PER_READ`` finding ids a call (a filter on
    ``Id`` and on our ``ProductArn``), never one call per finding. Never raises: what was not
    read (an error, the call budget, ``deadline``) is returned in ``WorkflowRead.unread``.

    Only findings whose ``Id`` was asked for and whose ``ProductArn`` is ours are taken from a
    response, whatever the service returned (moto ignores the filters).
    """

    def __init__(
        self,
        product_arn: str,
        client: SecurityHubClient | None = None,
        *,
        max_calls: int = MAX_READ_CALLS,
    ) -> None:
        self.product_arn = product_arn
        self._client = client
        self._lock = threading.Lock()
        self.max_calls = max_calls

    @property
    def client(self) -> SecurityHubClient:
        with self._lock:
            if self._client is None:
                self._client = boto3.client("securityhub", config=READ_CONFIG)
            return self._client

    def statuses(
        self, finding_ids: Sequence[str], *, deadline: Callable[[], bool] | None = None
    ) -> WorkflowRead:
        read = WorkflowRead()
        ids = list(dict.fromkeys(finding_ids))
        for start in range(0, len(ids), MAX_IDS_PER_READ):
            chunk = ids[start : start + MAX_IDS_PER_READ]
            why = self._read(chunk, read, deadline)
            if why is not None:
                read.error = why
                read.unread = [i for i in ids[start:] if i not in read.statuses]
                break
        return read

    def _read(
        self, chunk: list[str], read: WorkflowRead, deadline: Callable[[], bool] | None
    ) -> str | None:
        """Read one chunk into ``read``; why it stopped short, or None."""
        wanted = set(chunk)
        filters: dict[str, Any] = {
            "ProductArn": [{"Value": self.product_arn, "Comparison": "EQUALS"}],
            "Id": [{"Value": i, "Comparison": "EQUALS"} for i in chunk],
        }
        token: str | None = None
        while True:
            if read.calls >= self.max_calls:
                return f"more than {self.max_calls} GetFindings calls needed in one invocation"
            if _late(deadline):
                return "the function is out of time"
            kwargs: dict[str, Any] = {"Filters": filters, "MaxResults": 100}
            if token:
                kwargs["NextToken"] = token
            read.calls += 1
            try:
                page = self.client.get_findings(**kwargs)
            except ClientError as exc:
                return f"GetFindings failed ({_error_code(exc)})"
            except BotoCoreError as exc:
                return f"GetFindings failed ({type(exc).__name__})"
            for finding in page.get("Findings", []):
                fid = finding.get("Id")
                if fid in wanted and finding.get("ProductArn") == self.product_arn:
                    status = (finding.get("Workflow") or {}).get("Status")
                    if status:
                        read.statuses[fid] = str(status)
                    wanted.discard(fid)
            token = page.get("NextToken") or None
            if not token or not wanted:
                return None
