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
        cache_raw = env.get(ALLOWLIST_CACHE_SECONDS, "300").strip()
        try:
            cache = int(cache_raw)
        except ValueError:
            cache = -1
        if cache < 0:
            raise ConfigError(
                f"{ALLOWLIST_CACHE_SECONDS} must be whole seconds >= 0, got {cache_raw!r}"
            )
        return cls(parameter, topic, hub_raw in _TRUE, cache)
