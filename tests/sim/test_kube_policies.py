"""The Kubernetes simulator's ValidatingAdmissionPolicies (sim/kube/policies.py): matching,
conditions, validations, the failure policy and how a denial is answered."""

from __future__ import annotations

from typing import Any

import pytest

from flowexport.sim.kube.errors import ApiError
from flowexport.sim.kube.policies import check
from flowexport.sim.kube.resources import BUILTINS

SECRETS = next(k for k in BUILTINS if k.plural == "secrets")
LEASES = next(k for k in BUILTINS if k.plural == "leases")


def policy(expression: str, **spec: Any) -> dict[Any, dict[str, Any]]:
    body = {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["UPDATE"],
                    "resources": ["secrets"],
                }
            ]
        },
        "matchConditions": [
            {"name": "me", "expression": "request.userInfo.username == 'system:serviceaccount:a:b'"}
        ],
        "validations": [{"expression": expression, "message": "no", "reason": "Forbidden"}],
        **spec,
    }
    return {("", "p"): {"metadata": {"name": "p"}, "spec": body}}


BOUND = {
    ("", "b"): {
        "metadata": {"name": "b"},
        "spec": {"policyName": "p", "validationActions": ["Deny"]},
    }
}
OLD = {"metadata": {"name": "s", "labels": {"x": "1"}}, "data": {"k": "dg=="}}
NEW = {"metadata": {"name": "s", "labels": {"x": "1"}}, "data": {"k": "ZQ=="}}
SA = "system:serviceaccount:a:b"
SAME_DATA = "object.data == oldObject.data"


def test_a_bound_policy_denies_what_its_validation_refuses() -> None:
    with pytest.raises(ApiError) as denied:
        check(policy(SAME_DATA), BOUND, SECRETS, "UPDATE", NEW, OLD, SA)
    assert denied.value.code == 403 and "denied request: no" in str(denied.value)
    check(policy(SAME_DATA), BOUND, SECRETS, "UPDATE", OLD, OLD, SA)  # the same data: allowed


def test_only_what_it_matches_is_checked() -> None:
    check(policy(SAME_DATA), BOUND, SECRETS, "UPDATE", NEW, OLD, "someone-else")  # condition
    check(policy(SAME_DATA), BOUND, SECRETS, "DELETE", None, OLD, SA)  # operation
    check(policy(SAME_DATA), BOUND, LEASES, "UPDATE", NEW, OLD, SA)  # resource
    check(policy(SAME_DATA), {}, SECRETS, "UPDATE", NEW, OLD, SA)  # not bound
    audit = {
        ("", "b"): {
            "metadata": {"name": "b"},
            "spec": {"policyName": "p", "validationActions": ["Audit"]},
        }
    }
    check(policy(SAME_DATA), audit, SECRETS, "UPDATE", NEW, OLD, SA)  # not Deny


def test_an_expression_that_fails_counts_as_the_failure_policy_says() -> None:
    broken = "object.nothing.here == 1"
    with pytest.raises(ApiError):
        check(policy(broken), BOUND, SECRETS, "UPDATE", NEW, OLD, SA)
    check(policy(broken, failurePolicy="Ignore"), BOUND, SECRETS, "UPDATE", NEW, OLD, SA)
