"""Typed errors. Each names the thing that failed so an operator can act on one line."""

from __future__ import annotations


class DetectorError(Exception):
    """Base of every error the detector raises on purpose."""


class BadObject(DetectorError):
    """A Security Lake object that cannot be read as a CloudTrail OCSF table."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class AllowlistInvalid(DetectorError):
    """The allowlist text cannot be parsed; nothing is judged against a half-read allowlist."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"allowlist {source}: {reason}")
        self.source = source
        self.reason = reason


class AllowlistUnavailable(DetectorError):
    """The allowlist could not be fetched (missing parameter, access denied, throttled)."""


class SourceUnavailable(DetectorError):
    """An input location (file, directory, S3 prefix) could not be listed or opened."""


class ObjectUnreadable(DetectorError):
    """An object could not be fetched (not found, access denied, throttled)."""

    def __init__(self, name: str, reason: str, code: str = "") -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason
        self.code = code


class ObjectChanged(ObjectUnreadable):
    """The object S3 holds is not the one to read: a GET pinned to the announced ETag (or to
    the ETag of the object's first GET) was answered 412 PreconditionFailed."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason, code="PreconditionFailed")


class PublishFailed(DetectorError):
    """Findings could not be delivered (SNS or Security Hub), after retries."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"{target}: {reason}")
        self.target = target
        self.reason = reason


class ConfigError(DetectorError):
    """A required setting is missing or invalid; raised at cold start, naming the variable."""
