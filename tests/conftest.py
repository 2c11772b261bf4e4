"""Fixtures shared by every test directory."""

from collections.abc import Iterator

import pytest

from tests.moto_server import moto_server
from tests.pcesim import client, pce

__all__ = ["client", "moto_url", "pce"]


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto in server mode, one process for the whole run (tests reset it)."""
    with moto_server() as url:
        yield url
