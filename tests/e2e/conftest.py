"""End-to-end fixtures: the whole local stack."""

from conftest_stack import stack  # noqa: F401  (session fixture)
