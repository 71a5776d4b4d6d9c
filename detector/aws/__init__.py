"""Adapters: the only modules that talk to AWS (one per service)."""
