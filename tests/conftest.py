"""Shared pytest set-up: the real-parts fixtures live in tests/infra/."""

pytest_plugins = ["tests.infra.fixtures", "tests.infra.fixtures_bus", "tests.infra.fixtures_sysd"]
