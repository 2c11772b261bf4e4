"""Fixtures shared by every test directory."""

from tests.pcesim import client, pce

__all__ = ["client", "pce"]
