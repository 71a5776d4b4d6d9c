"""Every environment variable the Lambda reads, validated once at cold start."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from detector.core.errors import ConfigError

# One parameter's name, or a path ending in "/" (every parameter under it is one allowlist).
ALLOWLIST_PARAMETER = "ALLOWLIST_PARAMETER"
# Optional: a path whose parameters are named account lists (detector.aws.ssm).
ACCOUNT_LISTS_PATH = "ACCOUNT_LISTS_PATH"
# Optional: read the lake as a Security Lake subscriber, through this role (detector.aws.sts).
SUBSCRIBER_ROLE_ARN = "SUBSCRIBER_ROLE_ARN"
SUBSCRIBER_EXTERNAL_ID = "SUBSCRIBER_EXTERNAL_ID"
ALLOWLIST_CACHE_SECONDS = "ALLOWLIST_CACHE_SECONDS"
FINDINGS_TOPIC_ARN = "FINDINGS_TOPIC_ARN"
SECURITY_HUB_ENABLED = "SECURITY_HUB_ENABLED"
STATE_TABLE = "STATE_TABLE"
DEDUP_WINDOW_MINUTES = "DEDUP_WINDOW_MINUTES"
# Comma-separated detection slugs (detector/detections/); unset or empty: the default one.
DETECTIONS = "DETECTIONS"
DEFAULT_DETECTION = "ecr-upload-unknown-user"
# Optional: one SSM parameter holding time-bounded mutes (detector.report.mutes).
MUTES_PARAMETER = "MUTES_PARAMETER"

_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"environment variable {name} is required and not set")
    return value


@dataclass(frozen=True)
class Settings:
    allowlist_parameter: str
    findings_topic_arn: str
    security_hub_enabled: bool = True
    allowlist_cache_seconds: int = 300
    # Optional: without a state table the detector alerts on every delivery, as before.
    state_table: str | None = None
    dedup_window_minutes: int = 60
    detections: tuple[str, ...] = (DEFAULT_DETECTION,)
    account_lists_path: str | None = None
    subscriber_role_arn: str | None = None
    subscriber_external_id: str | None = None
    mutes_parameter: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        parameter = _required(env, ALLOWLIST_PARAMETER)
        topic = _required(env, FINDINGS_TOPIC_ARN)
        if not topic.startswith("arn:"):
            raise ConfigError(f"{FINDINGS_TOPIC_ARN} must be an SNS topic ARN, got {topic[:80]!r}")
        hub_raw = env.get(SECURITY_HUB_ENABLED, "true").strip().lower()
        if hub_raw not in _TRUE | _FALSE:
            raise ConfigError(f"{SECURITY_HUB_ENABLED} must be true or false, got {hub_raw[:20]!r}")
        cache = _whole(env, ALLOWLIST_CACHE_SECONDS, 300)
        window = _whole(env, DEDUP_WINDOW_MINUTES, 60)
        table = env.get(STATE_TABLE, "").strip() or None
        slugs = tuple(s.strip() for s in env.get(DETECTIONS, "").split(",") if s.strip())
        lists = env.get(ACCOUNT_LISTS_PATH, "").strip() or None
        for name, value in ((ALLOWLIST_PARAMETER, parameter), (ACCOUNT_LISTS_PATH, lists)):
            if value is not None and value.endswith("/") and not value.startswith("/"):
                raise ConfigError(f"{name}: a parameter path starts with '/', got {value[:80]!r}")
        if lists is not None and not lists.endswith("/"):
            raise ConfigError(
                f"{ACCOUNT_LISTS_PATH} is a path and ends with '/', got {lists[:80]!r}"
            )
        role = env.get(SUBSCRIBER_ROLE_ARN, "").strip() or None
        external_id = env.get(SUBSCRIBER_EXTERNAL_ID, "").strip() or None
        if role is not None and not _ROLE_ARN.fullmatch(role):
            raise ConfigError(f"{SUBSCRIBER_ROLE_ARN} must be an IAM role ARN, got {role[:80]!r}")
        if external_id is not None and role is None:
            raise ConfigError(f"{SUBSCRIBER_EXTERNAL_ID} is set but {SUBSCRIBER_ROLE_ARN} is not")
        mutes = env.get(MUTES_PARAMETER, "").strip() or None
        if mutes is not None and mutes.endswith("/"):
            raise ConfigError(f"{MUTES_PARAMETER} names one parameter, not a path: {mutes[:80]!r}")
        return cls(
            parameter,
            topic,
            hub_raw in _TRUE,
            cache,
            table,
            window,
            slugs or (DEFAULT_DETECTION,),
            lists,
            role,
            external_id,
            mutes_parameter=mutes,
        )


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{name} must be a whole number >= 0, got {raw[:20]!r}")
    return value
