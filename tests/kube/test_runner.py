"""Which namespace arguments make kopf watch the cluster's namespaces and CRDs."""

from __future__ import annotations

import pytest

from flowexport.kube.runner import has_patterns


@pytest.mark.parametrize(
    ("namespaces", "expected"),
    [
        ([], False),
        (["security"], False),
        (["security", "payments"], False),
        (["sec*"], True),
        (["team-?"], True),
        (["!kube-system"], True),
        (["a,b"], True),
        (["security", "prod-*"], True),
    ],
)
def test_only_patterns_need_the_cluster_scan(namespaces: list[str], expected: bool) -> None:
    assert has_patterns(namespaces) is expected
