"""The scale-out run uses the resilience suite's stack fixture: the dev stack as separate processes."""

from tests.chaos.conftest import chaos_stack, pytest_runtest_makereport

__all__ = ["chaos_stack", "pytest_runtest_makereport"]
