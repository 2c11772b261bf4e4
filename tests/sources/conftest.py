"""AWS tests run against moto in server mode: see `tests/cloud.py`."""

from tests.cloud import KEYS, REGION, Cloud, cloud

__all__ = ["KEYS", "REGION", "Cloud", "cloud"]
