"""STS adapter: reading the lake as a Security Lake subscriber, through the role Security Lake
created for it (``create-subscriber`` with access type S3) and the external id given then.

``subscriber_session`` returns a boto3 session whose credentials come from ``sts:AssumeRole``
on that role, fetched on first use and refreshed by botocore before they expire (botocore's
``RefreshableCredentials``: from 15 minutes before expiry, mandatorily from 10), so a warm
function never reads with expired credentials and never calls STS per object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import CredentialProvider, DeferredRefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError

from detector.core.errors import SourceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_sts import STSClient

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})
SESSION_NAME = "ecr-upload-detector"
# An hour: the default maximum session of a role Security Lake creates; botocore refreshes early.
DURATION_SECONDS = 3600


class _Provider(CredentialProvider):
    METHOD = "security-lake-subscriber"

    def __init__(self, fetch: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self._fetch = fetch

    def load(self) -> DeferredRefreshableCredentials:
        return DeferredRefreshableCredentials(refresh_using=self._fetch, method=self.METHOD)


def subscriber_session(
    role_arn: str,
    external_id: str | None,
    *,
    sts: STSClient | None = None,
    region: str | None = None,
) -> boto3.Session:
    """A session that reads as ``role_arn`` (with ``external_id``), refreshed before expiry.

    A failed ``AssumeRole`` raises ``SourceUnavailable`` naming the role when an object is read
    (the item fails and is retried), not at cold start.
    """
    client: STSClient = sts if sts is not None else boto3.client("sts", config=_RETRIES)

    def fetch() -> dict[str, Any]:
        args: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": SESSION_NAME,
            "DurationSeconds": DURATION_SECONDS,
        }
        if external_id:
            args["ExternalId"] = external_id
        try:
            creds = client.assume_role(**args)["Credentials"]
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise SourceUnavailable(
                f"sts:AssumeRole {role_arn}: {err.get('Code', 'ClientError')}: "
                f"{err.get('Message', '')} (check SubscriberRoleArn, SubscriberExternalId and "
                "that the subscriber still exists)"
            ) from exc
        except BotoCoreError as exc:
            raise SourceUnavailable(f"sts:AssumeRole {role_arn}: {exc}") from exc
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

    core = botocore.session.get_session()
    # First in the chain: the function's own credentials must never read the lake instead.
    core.get_component("credential_provider").insert_before("env", _Provider(fetch))
    if region:
        core.set_config_variable("region", region)
    return boto3.Session(botocore_session=core)
