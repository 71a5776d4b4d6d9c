"""Every environment variable the Lambda reads, validated once at cold start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from detector.errors import ConfigError

ALLOWLIST_PARAMETER = "ALLOWLIST_PARAMETER"
ALLOWLIST_CACHE_SECONDS = "ALLOWLIST_CACHE_SECONDS"
FINDINGS_TOPIC_ARN = "FINDINGS_TOPIC_ARN"
SECURITY_HUB_ENABLED = "SECURITY_HUB_ENABLED"
STATE_TABLE = "STATE_TABLE"
DEDUP_WINDOW_MINUTES = "DEDUP_WINDOW_MINUTES"
# Comma-separated detection slugs (detector/detections/); unset or empty: the default one.
DETECTIONS = "DETECTIONS"
DEFAULT_DETECTION = "ecr-upload-unknown-user"

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
        return cls(
            parameter, topic, hub_raw in _TRUE, cache, table, window, slugs or (DEFAULT_DETECTION,)
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
