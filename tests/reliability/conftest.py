"""Fixtures of the reliability tests: the marker, a seeded random source, a sandbox CRM."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterator

import pytest

from cauce.sandbox import SandboxCrmConfig, ThreadedSandboxCrm, start_sandbox_crm_in_thread
from tests.reliability.harness import CauceProcess, log, reliability_seed


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker here too, so `--strict-markers` accepts it before pyproject does."""
    config.addinivalue_line(
        "markers", "reliability: real processes killed and CRM faults (select with -m)"
    )


@pytest.fixture
def seed() -> int:
    """The seed of this test's random moments, printed so a failure can be replayed."""
    value = reliability_seed()
    # On stdout, which pytest shows under a failing test whatever the logging set-up: a
    # log record alone was not shown (INFO is below the root logger's WARNING, and
    # Cauce's logging set-up replaces the root logger's handlers, pytest's among them).
    sys.stdout.write(f"CAUCE_RELIABILITY_SEED={value}\n")
    log.info("CAUCE_RELIABILITY_SEED=%d", value)
    return value


@pytest.fixture
def rng(seed: int) -> random.Random:
    """The test's only random source (kill moments, which worker dies)."""
    return random.Random(seed)


SandboxFactory = Callable[[SandboxCrmConfig], ThreadedSandboxCrm]


@pytest.fixture
def sandbox_factory() -> Iterator[SandboxFactory]:
    """Start sandbox CRMs in threads; each is stopped at the end of the test."""
    started: list[ThreadedSandboxCrm] = []

    def start(config: SandboxCrmConfig) -> ThreadedSandboxCrm:
        sandbox = start_sandbox_crm_in_thread(config)
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def processes() -> Iterator[list[CauceProcess]]:
    """Cauce processes a test starts; whatever still runs at the end is stopped."""
    started: list[CauceProcess] = []
    yield started
    for process in started:
        process.stop()
