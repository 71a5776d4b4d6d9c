"""What a detection is: one declaration the generic engine runs (``detector/detections/``).

A detection declares the API operations it watches, the columns its row predicate needs, the
predicate itself (in Arrow for ``scan`` and the Lambda, in SQL for ``athena-sql``/``backfill``),
the request parameters it cuts out, the samples its findings keep, and every text and ASFF
field its alerts carry. The engine (reader, findings, alerts, digest, ASFF, SQL) works from
these declarations and names no operation, service or request field of its own: adding a
detection is adding a file to ``detector/detections/``.

Internal column names a predicate or sample may use (``schema.GENERIC``): ``operation``,
``user`` (caller ARN), ``account``, ``user_agent``, ``src_ip``, ``src_domain``, ``region``,
``time_ms`` (epoch milliseconds), ``principal_id``, ``session_issuer``, ``invoked_by``,
``status``, ``event_uid``, plus the detection's own ``request_fields``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from detector.core.allowlist import Allowlist
from detector.core.requestjson import Cond


@dataclass(frozen=True)
class Observable:
    field: str
    type: str
    role: str


@dataclass(frozen=True)
class RequestField:
    """A value cut out of the call's request parameters (v2 ``api.request.data`` JSON; v1
    ``unmapped['requestParameters.<key>']`` or the whole ``unmapped['requestParameters']``)."""

    column: str  # internal column name, e.g. "bucket"
    key: str  # top-level key in requestParameters, e.g. "someKeyName"
    # "response": cut out of the response instead (v2 ``api.response.data``; v1
    # ``unmapped['responseElements.<path>']`` or the whole ``unmapped['responseElements']``);
    # ``path`` is the dotted path to the value there (the key is found at any depth of the
    # JSON text, as CloudTrail writes it once per response).
    source: str = "request"
    path: str = ""


@dataclass(frozen=True)
class SampleSpec:
    """A bounded sample of distinct values a finding keeps of one column.

    Values of successful calls are kept with priority (failed calls cannot evict them) and are
    also listed on their own under ``succeeded_key``.
    """

    name: str  # the sample's name and its key in a finding's and an alert's JSON
    column: str  # the internal column sampled
    label: str  # how the email names it ("Repositories")
    succeeded_key: str  # JSON key of the values of successful calls


@dataclass(frozen=True)
class Option:
    """A setting of one detection, read from an environment variable (``--option`` in the CLI).

    ``parse`` turns the text into the value the predicate gets, raising ``ValueError`` with a
    reason for a bad value; the engine names the variable in the error.
    """

    env: str
    default: str
    help: str
    parse: Callable[[str], Any] = str


@dataclass(frozen=True)
class Context:
    """What a predicate is judged with: the shared allowlist and this detection's options."""

    allowlist: Allowlist
    options: Mapping[str, Any] = field(default_factory=dict)


# rows: internal column name -> Arrow array (one value per row, all the same length); returns
# a boolean array, True where the row is reported. A null counts as not reported, so a
# predicate must decide nulls itself (fill_null) where a missing value should be reported.
Predicate = Callable[[Mapping[str, pa.Array], Context], pa.Array]
# cols: internal column name -> SQL expression; returns a SQL boolean condition (rows
# reported), or None for "every row of the watched operations".
SqlPredicate = Callable[[Mapping[str, str], Context], str | None]


@dataclass(frozen=True)
class Command:
    """A shell command shown in the email: every value is quoted by the renderer."""

    words: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Step:
    """One item of "Check next" (or of a section): a line of our text, then commands, notes
    of our own, and data values (rendered escaped, continuation lines marked)."""

    text: str
    commands: tuple[Command, ...] = ()
    notes: tuple[str, ...] = ()
    data: tuple[str, ...] = ()


@dataclass(frozen=True)
class EmailText:
    """The words of the email that belong to the detection; the layout is the engine's."""

    headline: str  # the email's first line
    subject: str  # the subject's start; the principal's short name follows
    # Formatted with calls, principals, succeeded:
    summary: str
    pushed: str  # formatted with count: principals with a successful call
    verdict_success: str  # a principal's heading when a call succeeded
    verdict_attempt: str  # ... when none did
    calls: str  # "<Operation> calls" (a label)
    calls_noun: str  # "<Operation> call(s)"
    rest_success: str  # formatted with count: ", 2 with a successful push"
    all_failed: str  # every call failed
    outcome_unknown: str  # none succeeded, some without a recorded status
    first_success: str  # why an alert is sent again: first success after failures
    new_value: str  # ... a successful call with a new value of the escalation sample
    # "Check next": alert, a valid region (or ""), the padded time window (or None).
    check_next: Callable[[Any, str, tuple[str, str] | None], Sequence[Step]]
    # The closing section on how to silence an expected principal: title, steps.
    # Called with the run context (e.g. ``allowlist_parameter``).
    trust_title: str
    trust_steps: Callable[[Mapping[str, str]], Sequence[Step]]
    # ``scan``'s table: the line when nothing was found, and the total line (formatted with
    # findings, calls).
    none_found: str
    found: str
    # Why this alert fired, in the detection's own words (e.g. the business hours, their zone
    # and each push's local time): called with the alert and its detection's parsed options.
    reason: Callable[[Any, Mapping[str, Any]], Sequence[str]] | None = None


@dataclass(frozen=True)
class AsffSpec:
    """ASFF fields that belong to the detection (``detector.report.asff`` builds the rest)."""

    types: tuple[str, ...]
    api: str  # Action.AwsApiCallAction.Api
    service: str  # Action.AwsApiCallAction.ServiceName
    # Formatted with count, succeeded, failed, who:
    lead: str
    # (label, sample name or "succeeded:<sample>", width) listed after the lead:
    listings: tuple[tuple[str, str, int], ...]
    # Resources besides the principal: (values of the resource sample, successful first,
    # partition, region, account, limit) -> ASFF resources.
    resources: Callable[[Sequence[str], str, str, str, int], list[dict[str, Any]]]
    resource_sample: str  # the sample whose values ``resources`` gets
    # More resources from the whole alert (e.g. the container image pushed), after those:
    # (alert, partition, region, account, limit) -> ASFF resources.
    more_resources: Callable[[Any, str, str, str, int], list[dict[str, Any]]] | None = None


@dataclass(frozen=True)
class Example:
    """A sample event and whether the detection reports it (run by the tests, both versions).

    ``event`` overrides fields of ``tests/lake.event`` (a call by an assumed CI role);
    ``request`` is the call's requestParameters as a dict. ``allowlist`` and ``options`` set
    the context the event is judged in.
    """

    name: str
    reported: bool
    event: Mapping[str, Any] = field(default_factory=dict)
    request: Mapping[str, Any] | None = None
    allowlist: tuple[str, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)
    # More events of the example, each ``event`` with these fields changed (a threshold is
    # reached by several calls): every one is written to the same object.
    more: tuple[Mapping[str, Any], ...] = ()


# ESCU's detection types. Hunting searches are meant for a person to look through: they run in
# ``scan``/``backfill`` but not in the Lambda unless named in ``DETECTIONS``.
TYPES = ("TTP", "Anomaly", "Hunting")
# How a detection decides, for listings and docs: one event at a time on its columns
# ("filter"), also on its request JSON ("request"), on the time of day ("time"), or over a
# time bucket: a count ("threshold") or a distinct count ("window").
SHAPES = ("filter", "request", "time", "threshold", "window")


@dataclass(frozen=True)
class Threshold:
    """Report a key only when, within one tumbling time bucket, its reported rows reach
    ``minimum`` (or, with ``distinct``, its distinct values of that column do).

    Buckets start at multiples of ``bucket_seconds`` since the epoch (Splunk's ``bin``/
    ``bucket span=``). In ``scan`` and SQL the key is the caller ARN (``user``, as ESCU's
    ``BY _time actor.user.uid``); in the Lambda it is the alert principal (a role's sessions
    count together), counted across objects and invocations in the state table.
    """

    bucket_seconds: int
    minimum: int
    # A grouping column (``schema.GROUP_KEYS``) whose distinct non-null values are counted.
    distinct: str | None = None
    # How the email names what was counted ("AccessDenied errors", "source IPs").
    label: str = "calls"

    @property
    def bucket_ms(self) -> int:
        return self.bucket_seconds * 1000

    def describe(self) -> str:
        what = f"distinct {self.label}" if self.distinct else self.label
        minutes = self.bucket_seconds // 60
        span = f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"
        return f"at least {self.minimum} {what} per caller in a {span} bucket"


@dataclass(frozen=True)
class Detection:
    # --- metadata (ESCU) ----------------------------------------------------------------
    id: str
    slug: str
    name: str
    version: int
    date: str
    author: str
    description: str
    mitre_attack_ids: tuple[str, ...]
    mitre_names: Mapping[str, str]
    analytic_story: tuple[str, ...]
    confidence: int
    impact: int
    severity: str
    message_template: str  # formatted with user
    references: tuple[str, ...]
    observables: tuple[Observable, ...]
    known_false_positives: str
    how_to_respond: str
    # --- what it reads and keeps --------------------------------------------------------
    operations: tuple[str, ...]
    predicate_columns: tuple[str, ...]
    predicate: Predicate
    sql_predicate: SqlPredicate
    request_fields: tuple[RequestField, ...]
    samples: tuple[SampleSpec, ...]
    # The sample whose new successful values send an alert again within the window, and the
    # ``reason`` such an alert carries.
    escalate_on: str
    new_value_reason: str
    options: tuple[Option, ...] = ()
    # CloudWatch metric (Count) of the rows it reported in an invocation.
    metric: str = ""
    # Checks the parsed options together (e.g. start before end); raises ValueError.
    check_options: Callable[[Mapping[str, Any]], None] | None = None
    # Whether the predicate consults the shared allowlist (``scan`` needs --allowlist only then).
    uses_allowlist: bool = True
    # Severity by outcome: an alert none of whose calls succeeded (nothing landed) has this
    # severity instead of ``severity``, in the email, the JSON and ASFF alike. None: the same.
    severity_failed_only: str | None = None
    # Samples added after the stable keys of every JSON form (findings, alerts, SQL results),
    # e.g. the image digests a push returned; kept like ``samples`` (successful calls first).
    extra_samples: tuple[SampleSpec, ...] = ()
    # ESCU's type (``TYPES``) and how the detection decides (``SHAPES``; "" means "filter",
    # or "request"/"threshold"/"window" as ``request_test``/``threshold`` say).
    escu_type: str = "Anomaly"
    shape: str = ""
    # A test of the request JSON, judged after the predicate for the rows it kept (parsed once
    # per such row, whatever the number of detections; ``detector.core.requestjson``).
    request_test: Cond | None = None
    # Report a key only past a count in a time bucket (``Threshold``).
    threshold: Threshold | None = None
    # Where this port departs from ESCU's search, one sentence each (the docs' table).
    deviations: tuple[str, ...] = ()
    # --- how it reads -------------------------------------------------------------------
    email: EmailText | None = None
    asff: AsffSpec | None = None
    examples: tuple[Example, ...] = ()

    @property
    def kind(self) -> str:
        """The shape: ``shape`` when set, else what ``threshold``/``request_test`` imply."""
        if self.shape:
            return self.shape
        if self.threshold is not None:
            return "window" if self.threshold.distinct else "threshold"
        return "request" if self.request_test is not None else "filter"

    @property
    def in_lambda_by_default(self) -> bool:
        """Whether ``DETECTIONS=all`` (or a type) runs it in the Lambda: not Hunting."""
        return self.escu_type != "Hunting"

    @property
    def risk_score(self) -> int:
        """ESCU risk = confidence * impact / 100 (70 * 70 / 100 = 49)."""
        return self.confidence * self.impact // 100

    def message(self, user: str) -> str:
        return self.message_template.format(user=user)

    def metadata(self) -> dict[str, Any]:
        """The detection as JSON-ready data (the ``detection`` object of every JSON output)."""
        data = {name: _plain(getattr(self, name)) for name in METADATA_FIELDS}
        data["risk_score"] = self.risk_score
        return data

    def option(self, env: str) -> Option:
        for opt in self.options:
            if opt.env == env:
                return opt
        raise KeyError(env)


# The metadata keys every JSON output carries, in order (a stable contract).
METADATA_FIELDS = (
    "id",
    "name",
    "version",
    "date",
    "author",
    "description",
    "mitre_attack_ids",
    "analytic_story",
    "confidence",
    "impact",
    "severity",
    "message_template",
    "references",
    "observables",
    "known_false_positives",
    "how_to_respond",
)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Active:
    """A detection enabled for a run, with its options parsed."""

    detection: Detection
    options: Mapping[str, Any] = field(default_factory=dict)

    def context(self, allowlist: Allowlist) -> Context:
        return Context(allowlist, self.options)
