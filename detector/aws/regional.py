"""Clients for the command line's ``backfill``, each in the region its resource lives in.

The Lambda runs in one region and builds its clients there. A command line may be configured for
another default region than the lake, the topic or the table, and a client in the wrong region
fails (an SNS topic is only found in its own region; a Security Hub ``ProductArn`` must name the
region it is imported into). So each client is built for its resource's region here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from detector.aws.dynamodb import StateTable
from detector.aws.securityhub import SecurityHubPublisher
from detector.aws.sns import SnsPublisher
from detector.core.errors import DetectorError

if TYPE_CHECKING:
    from mypy_boto3_sts import STSClient

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})


class IdentityUnavailable(DetectorError):
    """The caller's identity could not be read (no credentials, STS unreachable)."""


@dataclass(frozen=True)
class Caller:
    account_id: str
    partition: str


def caller(region: str, client: STSClient | None = None) -> Caller:
    """The account and partition of the credentials in use (``GetCallerIdentity``)."""
    sts = client or boto3.client("sts", region_name=region, config=_RETRIES)
    try:
        identity = sts.get_caller_identity()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise IdentityUnavailable(f"STS GetCallerIdentity: {code}") from exc
    except BotoCoreError as exc:
        raise IdentityUnavailable(f"STS GetCallerIdentity: {exc}") from exc
    arn = identity.get("Arn", "")
    parts = arn.split(":")
    return Caller(str(identity["Account"]), parts[1] if len(parts) > 1 and parts[1] else "aws")


def topic_region(topic_arn: str) -> str | None:
    """``arn:aws:sns:REGION:ACCOUNT:NAME`` → REGION."""
    parts = topic_arn.split(":")
    return parts[3] if len(parts) == 6 and parts[2] == "sns" and parts[3] else None


def sns_publisher(topic_arn: str) -> SnsPublisher:
    # SnsPublisher retries on its own (counted, reported): botocore's retries stay off.
    client = boto3.client(
        "sns",
        region_name=topic_region(topic_arn),
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    return SnsPublisher(topic_arn, client)


def security_hub_publisher(region: str) -> SecurityHubPublisher:
    return SecurityHubPublisher(boto3.client("securityhub", region_name=region))


def state_table(name: str, region: str) -> StateTable:
    return StateTable(name, boto3.client("dynamodb", region_name=region, config=_RETRIES))
