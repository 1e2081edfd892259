"""Fixtures shared by the tests of ops/: the drill's test platform (drill_fixtures.py), module-scoped,
so each test module that asks for `platform` builds and removes one of its own."""

from tests.ops.drill_fixtures import platform  # noqa: F401  (registered here as a fixture)
