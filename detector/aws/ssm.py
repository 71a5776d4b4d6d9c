"""SSM Parameter Store adapter: the allowlist, cached for a while so warm calls cost nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from detector.allowlist import Allowlist
from detector.errors import AllowlistUnavailable

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

# botocore's standard retry mode backs off on throttling and 5xx before we see an error.
_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})


class AllowlistStore:
    """Reads the allowlist parameter (String, StringList or SecureString) with a TTL cache."""

    def __init__(
        self,
        name: str,
        client: SSMClient | None = None,
        *,
        cache_seconds: int = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._client = client
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._cached: tuple[float, Allowlist] | None = None

    @property
    def client(self) -> SSMClient:
        if self._client is None:
            self._client = boto3.client("ssm", config=_RETRIES)
        return self._client

    def get(self) -> Allowlist:
        """The allowlist; raises ``AllowlistUnavailable`` or ``AllowlistInvalid``, never guesses."""
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        try:
            param = self.client.get_parameter(Name=self.name, WithDecryption=True)["Parameter"]
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code, message = err.get("Code", "ClientError"), err.get("Message", "")
            raise AllowlistUnavailable(f"SSM parameter {self.name}: {code}: {message}") from exc
        except BotoCoreError as exc:
            raise AllowlistUnavailable(f"SSM parameter {self.name}: {exc}") from exc
        # A StringList value is comma-separated, which the parser accepts as it is.
        allowlist = Allowlist.parse(param.get("Value", ""), source=f"ssm:{self.name}")
        self._cached = (now, allowlist)
        return allowlist
