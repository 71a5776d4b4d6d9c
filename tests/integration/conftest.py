"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from detector import handler
from tests import lake
from tests.integration.world import PARAM, STATE_TABLE, Aws, create_state_table


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("ALLOWLIST_PARAMETER", PARAM)
    handler.reset()
    with mock_aws():
        world = Aws()
        world.allowlist(f"# CI\n{lake.CI_ROLE}\n")
        monkeypatch.setenv("FINDINGS_TOPIC_ARN", world.topic)
        yield world
    handler.reset()


@pytest.fixture
def state(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> str:
    """The state table (exactly-once alerting) and a 60-minute alert window, as deployed."""
    create_state_table(STATE_TABLE)
    monkeypatch.setenv("STATE_TABLE", STATE_TABLE)
    monkeypatch.setenv("DEDUP_WINDOW_MINUTES", "60")
    handler.reset()
    return STATE_TABLE
