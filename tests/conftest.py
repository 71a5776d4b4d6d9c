"""Fixtures and settings for every test."""

from __future__ import annotations

from tests.motosafe import serialize_dynamodb

# Before any test talks to moto: its DynamoDB is not safe for the parallel state-table calls.
serialize_dynamodb()
