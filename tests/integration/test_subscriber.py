"""Reading the lake as a Security Lake subscriber: every S3 read goes through sts:AssumeRole on
the subscriber role with the external id, with credentials cached and refreshed before expiry.
Driven through the Lambda handler against moto (STS, then S3 with the returned credentials)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from detector import handler
from detector.app.settings import Settings
from detector.aws import sts as sts_adapter
from detector.core.errors import ConfigError, SourceUnavailable
from tests import lake
from tests.integration.test_attacks import announce, invoke
from tests.integration.world import Aws

ROLE = "arn:aws:iam::444455556666:role/AmazonSecurityLake-Subscriber-ecr-detector"
EXTERNAL_ID = "ecr-detector-7f3a"
INTRUDER = f"arn:aws:iam::{lake.ACCOUNT}:user/intruder"


class Spy:
    """Wraps ``subscriber_session`` to see what AssumeRole was asked and returned, and which
    credentials signed each S3 request."""

    def __init__(self) -> None:
        self.assume_params: list[dict[str, Any]] = []
        self.assumed_keys: list[str] = []
        self.s3_keys: list[tuple[str, str]] = []  # (operation, access key id)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = sts_adapter.subscriber_session

        def spied(*args: Any, **kwargs: Any) -> boto3.Session:
            client = boto3.client("sts")
            client.meta.events.register(
                "provide-client-params.sts.AssumeRole",
                lambda params, **_: self.assume_params.append(dict(params)),
            )
            client.meta.events.register(
                "after-call.sts.AssumeRole",
                lambda parsed, **_: self.assumed_keys.append(parsed["Credentials"]["AccessKeyId"]),
            )
            session = real(*args, sts=client, **kwargs)
            session.events.register("before-sign.s3", self._signed)
            return session

        monkeypatch.setattr(sts_adapter, "subscriber_session", spied)

    def _signed(self, operation_name: str, request_signer: Any, **_: Any) -> None:
        # The credentials the signer is about to sign this request with.
        frozen = request_signer._credentials.get_frozen_credentials()
        self.s3_keys.append((operation_name, frozen.access_key))


def test_s3_reads_use_the_assumed_subscriber_credentials(aws: Aws, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SUBSCRIBER_ROLE_ARN", ROLE)
    monkeypatch.setenv("SUBSCRIBER_EXTERNAL_ID", EXTERNAL_ID)
    spy = Spy()
    spy.install(monkeypatch)
    handler.reset()
    event = announce(aws, ("pushes", [lake.event(arn=INTRUDER, session_issuer=None)]))
    assert invoke(event) == {"batchItemFailures": []}
    (params,) = spy.assume_params  # once, cached for the next reads
    assert params["RoleArn"] == ROLE and params["ExternalId"] == EXTERNAL_ID
    (assumed,) = spy.assumed_keys
    own = boto3.client("s3")._request_signer._credentials.access_key  # the function's own
    assert assumed != own
    reads = [key for op, key in spy.s3_keys if op == "GetObject"]
    assert reads and set(reads) == {assumed}
    (digest,) = aws.digests()
    assert [a["principal"] for a in digest["alerts"]] == [INTRUDER]
    # A second invocation reuses the credentials: no new AssumeRole.
    invoke(announce(aws, ("again", [lake.event(arn=INTRUDER, session_issuer=None)])))
    assert len(spy.assume_params) == 1


def test_without_the_role_the_function_reads_with_its_own_credentials(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("SUBSCRIBER_ROLE_ARN", raising=False)
    spy = Spy()
    spy.install(monkeypatch)
    handler.reset()
    invoke(announce(aws, ("direct", [lake.event(arn=INTRUDER, session_issuer=None)])))
    assert spy.assume_params == [] and spy.s3_keys == []


class FakeSts:
    def __init__(self, lifetime: timedelta, error: Exception | None = None) -> None:
        self.calls = 0
        self.lifetime = lifetime
        self.error = error

    def assume_role(self, **params: Any) -> dict[str, Any]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return {
            "Credentials": {
                "AccessKeyId": f"ASIAFAKE{self.calls:04d}",
                "SecretAccessKey": "secret",
                "SessionToken": "token",
                "Expiration": datetime.now(UTC) + self.lifetime,
            }
        }


def test_credentials_are_cached_and_refreshed_before_they_expire():
    fresh = FakeSts(timedelta(hours=1))
    session = sts_adapter.subscriber_session(ROLE, EXTERNAL_ID, sts=fresh)  # type: ignore[arg-type]
    creds = session.get_credentials()
    assert fresh.calls == 0  # nothing fetched before the first read
    keys = {creds.get_frozen_credentials().access_key for _ in range(50)}
    assert keys == {"ASIAFAKE0001"} and fresh.calls == 1
    # Credentials within botocore's mandatory refresh window (10 minutes) are replaced before
    # use, never used expired.
    closing = FakeSts(timedelta(minutes=5))
    session = sts_adapter.subscriber_session(ROLE, EXTERNAL_ID, sts=closing)  # type: ignore[arg-type]
    creds = session.get_credentials()
    first = creds.get_frozen_credentials().access_key
    second = creds.get_frozen_credentials().access_key
    assert first != second and closing.calls >= 2


def test_a_refused_assume_role_names_the_role():
    from botocore.exceptions import ClientError

    denied = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, "AssumeRole"
    )
    session = sts_adapter.subscriber_session(
        ROLE,
        EXTERNAL_ID,
        sts=FakeSts(timedelta(hours=1), denied),  # type: ignore[arg-type]
    )
    with pytest.raises(
        SourceUnavailable, match=r"AssumeRole .*Subscriber-ecr-detector.*AccessDenied"
    ):
        session.get_credentials().get_frozen_credentials()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SUBSCRIBER_ROLE_ARN": "not-an-arn"}, "must be an IAM role ARN"),
        ({"SUBSCRIBER_EXTERNAL_ID": "x"}, "SUBSCRIBER_ROLE_ARN is not"),
    ],
)
def test_subscriber_settings_are_checked_at_cold_start(env: dict[str, str], message: str):
    base = {"ALLOWLIST_PARAMETER": "/a", "FINDINGS_TOPIC_ARN": "arn:aws:sns:us-east-1:1:t"}
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(base | env)
