"""SSM Parameter Store adapter: the allowlist, cached for a while so warm calls cost nothing.

``ALLOWLIST_PARAMETER`` names one parameter, or a path ending in ``/``: then every parameter
under it (recursively) is part of one allowlist, so teams can own their own parameters. An
optional ``ACCOUNT_LISTS_PATH`` holds named account lists, one parameter each (its last path
segment is the list's name), that allowlist entries may be written over
(``arn:aws:iam::{ci-accounts}:role/ci-deployer``; see ``detector.core.allowlist``). Errors name the
parameter and the line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from detector.core.allowlist import Allowlist, account_list
from detector.core.errors import AllowlistInvalid, AllowlistUnavailable, DetectorError
from detector.report.mutes import MuteList, MuteListInvalid, MuteListUnavailable

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

# botocore's standard retry mode backs off on throttling and 5xx before we see an error.
_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})
# Parameters read under one path at the most: far more than teams own, small enough that a
# path pointed at the wrong tree fails at once instead of reading an account's every parameter.
MAX_PARAMETERS = 1_000


class AllowlistStore:
    """Reads the allowlist parameter(s) (String, StringList or SecureString) with a TTL cache."""

    def __init__(
        self,
        name: str,
        client: SSMClient | None = None,
        *,
        cache_seconds: int = 300,
        clock: Callable[[], float] = time.monotonic,
        account_lists_path: str | None = None,
    ) -> None:
        self.name = name
        self._client = client
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._cached: tuple[float, Allowlist] | None = None
        self.account_lists_path = account_lists_path

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
        accounts: dict[str, tuple[str, ...]] = {}
        where: dict[str, str] = {}
        if self.account_lists_path:
            for name, value in self._read_path(self.account_lists_path):
                short = name.rstrip("/").rsplit("/", 1)[-1]
                if short in where:
                    # Two lists of one name under the path: which one an entry means is not
                    # for us to guess (one could drop the organisation's accounts).
                    raise AllowlistInvalid(
                        f"ssm:{name}",
                        f"account list {short!r} is also {where[short]}: give each list under "
                        f"{self.account_lists_path} its own name",
                    )
                where[short] = name
                accounts[short] = account_list(value, f"ssm:{name}")
        if self.name.endswith("/"):
            entries: list[str] = []
            for name, value in self._read_path(self.name):
                # A StringList value is comma-separated, which the parser accepts as it is.
                entries += Allowlist.parse_entries(value, f"ssm:{name}", accounts)
            allowlist = Allowlist.combine(entries, f"ssm:{self.name}")
        else:
            value = self._read_one(self.name)
            allowlist = Allowlist.parse(value, source=f"ssm:{self.name}", accounts=accounts)
        self._cached = (now, allowlist)
        return allowlist

    def _read_one(self, name: str) -> str:
        return str(_parameter(self.client, name, AllowlistUnavailable).get("Value", ""))

    def _read_path(self, path: str) -> list[tuple[str, str]]:
        """(name, value) of every parameter under ``path``, sorted by name; at least one."""
        try:
            found = sorted(self._pages(path))
        except ClientError as exc:
            raise AllowlistUnavailable(f"SSM parameters under {path}: {_describe(exc)}") from exc
        except BotoCoreError as exc:
            raise AllowlistUnavailable(f"SSM parameters under {path}: {exc}") from exc
        if not found:
            # An empty path is a wrong name far more often than a wish to trust nobody.
            raise AllowlistUnavailable(f"SSM parameters under {path}: none found")
        return found

    def _pages(self, path: str) -> Iterator[tuple[str, str]]:
        paginator = self.client.get_paginator("get_parameters_by_path")
        count = 0
        for page in paginator.paginate(
            Path=path.rstrip("/") or "/", Recursive=True, WithDecryption=True
        ):
            for param in page.get("Parameters", []):
                count += 1
                if count > MAX_PARAMETERS:
                    raise AllowlistUnavailable(
                        f"SSM parameters under {path}: more than {MAX_PARAMETERS}; point the "
                        "path at the allowlist's own folder"
                    )
                yield param["Name"], param.get("Value", "")


def _parameter(client: SSMClient, name: str, error: type[DetectorError]) -> dict[str, Any]:
    """One parameter (decrypted); a failure raises ``error`` naming it."""
    try:
        found: dict[str, Any] = dict(
            client.get_parameter(Name=name, WithDecryption=True)["Parameter"]
        )
    except ClientError as exc:
        raise error(f"SSM parameter {name}: {_describe(exc)}") from exc
    except BotoCoreError as exc:
        raise error(f"SSM parameter {name}: {exc}") from exc
    return found


def _describe(exc: ClientError) -> str:
    err = exc.response.get("Error", {})
    return f"{err.get('Code', 'ClientError')}: {err.get('Message', '')}"


class MuteListStore:
    """Reads the mute list (``MUTES_PARAMETER``: one ``String`` or ``SecureString`` parameter,
    see ``detector.report.mutes``) with a TTL cache. A ``StringList`` is refused: SSM joins its
    values with commas, and a mute's ``why`` may hold commas. A read error or an invalid list
    is not cached: the next invocation reads again."""

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
        self._cached: tuple[float, MuteList] | None = None

    @property
    def client(self) -> SSMClient:
        if self._client is None:
            self._client = boto3.client("ssm", config=_RETRIES)
        return self._client

    def get(self) -> MuteList:
        """The mute list; raises ``MuteListUnavailable`` or ``MuteListInvalid``."""
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        param = _parameter(self.client, self.name, MuteListUnavailable)
        source = f"ssm:{self.name}"
        if param.get("Type") == "StringList":
            raise MuteListInvalid(
                source, "is a StringList (comma-joined); store one entry a line in a String"
            )
        mutes = MuteList.parse(param.get("Value", ""), source)
        self._cached = (now, mutes)
        return mutes
