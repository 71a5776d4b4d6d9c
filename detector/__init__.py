"""Detects Amazon ECR image pushes by principals not on an allowlist, from Amazon Security Lake."""

__version__ = "0.1.0"
