"""Fixtures shared across test modules: the PostgreSQL server and the journal backends."""

pytest_plugins = ["tests.harness.postgres"]
