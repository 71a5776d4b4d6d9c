"""SNS adapter: publish digest messages (``detector.report.digest.Message``) to a topic, with
retries."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from detector.core.errors import PublishFailed
from detector.report.digest import Message

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

# Error codes worth another try: throttling (SNS says "Throttled"; other spellings from the
# wider AWS family, KMS behind an encrypted topic) and server-side faults. Any HTTP status of
# 500 or more is retried too. Everything else (NotFound, AuthorizationError, InvalidParameter,
# KMSDisabled...) will not get better by waiting.
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "Throttled",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestThrottled",
        "KMSThrottling",
        "KMSThrottlingException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# Network failures (connect errors, timeouts, dropped connections; botocore's own transient
# classes): retried. A publish may then be delivered twice, which at-least-once consumers
# accept anyway.
_RETRYABLE_BOTOCORE = (BotoConnectionError, HTTPClientError)

BASE_DELAY_S = 0.5
MAX_DELAY_S = 8.0


def retryable(exc: Exception) -> bool:
    """Whether an error from ``Publish`` is transient, judged by code and status, never text."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in RETRYABLE_CODES or status >= 500 or status == 429
    return isinstance(exc, _RETRYABLE_BOTOCORE)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        text = f"{err.get('Code', 'ClientError')} (HTTP {status}): {err.get('Message', '')}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]


class SnsPublisher:
    """Publishes digest messages to one topic; each publish retried on transient errors."""

    def __init__(
        self,
        topic_arn: str,
        client: SNSClient | None = None,
        *,
        max_attempts: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.topic_arn = topic_arn
        self._client = client
        self.max_attempts = max_attempts
        self._sleep = sleep

    @property
    def client(self) -> SNSClient:
        if self._client is None:
            # botocore's own retries are turned off so that ours (counted, logged in the
            # error) are the only ones: layered retries multiply the attempts.
            self._client = boto3.client(
                "sns", config=Config(retries={"mode": "standard", "total_max_attempts": 1})
            )
        return self._client

    def publish(self, messages: Sequence[Message]) -> list[str]:
        """Publish each message in order; the SNS message ids, one per message.

        Raises ``PublishFailed`` on the first message that cannot be published; the messages
        before it were delivered (its text says how many).
        """
        ids: list[str] = []
        for n, message in enumerate(messages, 1):
            ids.append(self._publish_one(message, n, len(messages), len(ids)))
        return ids

    def _publish_one(self, message: Message, n: int, total: int, done: int) -> str:
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self.client.publish(
                    TopicArn=self.topic_arn,
                    Subject=message.subject,
                    Message=message.message,
                    # One body per protocol (email text, JSON for the rest). SNS sends message
                    # attributes only with the String structure, so none are sent: filter
                    # policies match the JSON body's top-level keys instead (digest.routing).
                    MessageStructure="json",
                )
                return response["MessageId"]
            except (ClientError, BotoCoreError) as exc:
                again = retryable(exc)
                if not again or attempt == self.max_attempts:
                    tries = f"after {attempt} attempt(s)" if again else "not retryable"
                    raise PublishFailed(
                        "sns",
                        f"{self.topic_arn}: message {n}/{total} ({message.alert_count} "
                        f"alert(s)) not published, {tries}: {_describe(exc)}; "
                        f"{done} message(s) published before it",
                    ) from exc
                self._sleep(self._delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _delay(attempt: int) -> float:
        """Exponential backoff with jitter: ~0.5 s, 1 s, 2 s... capped at 8 s."""
        ceiling = min(MAX_DELAY_S, BASE_DELAY_S * 2 ** (attempt - 1))
        return float(ceiling * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not a secret
