"""The control plane itself: the pinned release, RBAC on, and an admin who may do anything.
Without the binaries this is the one test skipped, saying why (see conftest.py)."""

from __future__ import annotations

import httpx

from tests.realkube.controlplane import ControlPlane


def test_a_real_control_plane_runs(control_plane: ControlPlane, admin: httpx.Client) -> None:
    version = admin.get("/version").json()
    assert version["gitVersion"] == "v1.37.2", version
    with httpx.Client(base_url=control_plane.url, verify=False, timeout=10) as anonymous:
        assert anonymous.get("/api/v1/namespaces").status_code == 401
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "*", "resource": "*", "group": "*"}},
    }
    answer = admin.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json=review)
    assert answer.json()["status"]["allowed"] is True
    ready = admin.get("/readyz", params={"verbose": "1"}).text
    assert "readyz check passed" in ready
