"""Fixtures shared by every test directory, and how `make test` spreads the tests over two
processes (pytest-xdist: `-n 2 --dist loadfile`, tests/realkube/ as one file)."""

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest

from tests.moto_server import moto_server
from tests.pcesim import client, pce

__all__ = ["client", "moto_url", "pce"]

#: Where the tests on the real control plane are: one process runs them all, so a run starts
#: one etcd and kube-apiserver (their session fixture), not one per process.
REAL_CONTROL_PLANE = "tests/realkube/"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto in server mode, one process for the whole run (tests reset it)."""
    with moto_server() as url:
        yield url


#: Under xdist, these go out first, longest first (a few tests of half a minute each), so the
#: run does not end with one process on a long file while the other waits.
LONG_FIRST = (
    REAL_CONTROL_PLANE,
    "tests/faults/",
    "tests/e2e/",
    "tests/test_cli_demo.py",
    "tests/test_bench.py",
)


def _rank(nodeid: str) -> int:
    return next((i for i, p in enumerate(LONG_FIRST) if nodeid.startswith(p)), len(LONG_FIRST))


if importlib.util.find_spec("xdist") is not None:

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        """`--dist loadfile`: a file's tests in one process, in their order (module fixtures
        made once), as xdist does, every file of tests/realkube/ in the same process, and the
        long files handed out first (`LONG_FIRST`, then in collection order)."""
        if config.getoption("dist") != "loadfile":
            return None
        from xdist.scheduler import LoadFileScheduling  # noqa: PLC0415 - only under xdist

        config.option.loadscopereorder = False  # not by the number of tests: `LONG_FIRST`

        class FilesAndOneControlPlane(LoadFileScheduling):  # type: ignore[misc]
            def _split_scope(self, nodeid: str) -> str:
                scope = str(super()._split_scope(nodeid))
                return REAL_CONTROL_PLANE if scope.startswith(REAL_CONTROL_PLANE) else scope

        return FilesAndOneControlPlane(config, log)

    def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
        """In an xdist worker: the long files first (`LONG_FIRST`; every worker collects the
        same and so reorders the same, as xdist needs; a file's tests keep their order)."""
        if hasattr(config, "workerinput"):
            items.sort(key=lambda item: _rank(item.nodeid))
