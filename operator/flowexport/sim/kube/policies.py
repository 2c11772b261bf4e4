"""ValidatingAdmissionPolicies (admissionregistration.k8s.io/v1), as far as the chart uses them.

A write (create, update, delete) is checked against every policy a binding with the `Deny`
action names: the policy applies when one of its `matchConstraints.resourceRules` covers the
resource and operation and all its `matchConditions` hold; then each validation's CEL
expression must hold, else the write is refused with the validation's `reason` (default
`Invalid`, 422) and its message, as the API server words it. Expressions see `object`,
`oldObject` (null on create and delete, as the API server's), `request` (`operation`,
`userInfo.username`, `namespace`, `name`, `resource`, `subResource`) and `variables`.

CEL is evaluated by cel-python, not the API server's cel-go: the Kubernetes CEL libraries
(quantities, IP, URL, lists' extensions) and type checking are not there, and a binding's
`matchResources` and `paramRef` are not supported (the chart sets neither). An expression that
fails to evaluate counts as `failurePolicy` says (default `Fail`: the write is refused).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from flowexport.sim.kube.errors import ApiError
from flowexport.sim.kube.resources import ResourceType

GROUP = "admissionregistration.k8s.io"
#: The HTTP status of each validation reason.
_STATUS = {"Unauthorized": 401, "Forbidden": 403, "Invalid": 422, "RequestEntityTooLarge": 413}


def check(
    policies: Mapping[Any, dict[str, Any]],
    bindings: Mapping[Any, dict[str, Any]],
    kind: ResourceType,
    operation: str,
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None,
    user: str,
    sub: str | None = None,
) -> None:
    """Raise ApiError when a bound policy refuses the write (see the module)."""
    if not bindings:
        return
    by_name = {p["metadata"]["name"]: p for p in policies.values()}
    meta = (obj or old or {}).get("metadata", {})
    request = {
        "operation": operation,
        "userInfo": {"username": user},
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "resource": {"group": kind.group, "version": kind.version, "resource": kind.plural},
        "subResource": sub or "",
    }
    for binding in sorted(bindings.values(), key=lambda b: b["metadata"]["name"]):
        spec = binding.get("spec", {})
        policy = by_name.get(spec.get("policyName", ""))
        if policy is None or "Deny" not in spec.get("validationActions", []):
            continue
        _check_policy(policy, binding, kind, operation, sub, request, obj, old)


def _check_policy(
    policy: dict[str, Any],
    binding: dict[str, Any],
    kind: ResourceType,
    operation: str,
    sub: str | None,
    request: dict[str, Any],
    obj: dict[str, Any] | None,
    old: dict[str, Any] | None,
) -> None:
    spec = policy.get("spec", {})
    resource = f"{kind.plural}/{sub}" if sub else kind.plural
    rules = spec.get("matchConstraints", {}).get("resourceRules", [])
    if not any(_covers(rule, kind, resource, operation) for rule in rules):
        return
    fail = spec.get("failurePolicy", "Fail") == "Fail"
    values: dict[str, Any] = {"object": obj, "oldObject": old, "request": request}
    for condition in spec.get("matchConditions", []):
        held = _evaluate(condition["expression"], values)
        if held is None and not fail:
            return
        if held is not True and held is not None:
            return
        if held is None:
            break  # an error under failurePolicy Fail: the policy applies
    variables: dict[str, Any] = {}
    for variable in spec.get("variables", []):
        variables[variable["name"]] = _evaluate(variable["expression"], values)
    values["variables"] = variables
    names = (policy["metadata"]["name"], binding["metadata"]["name"])
    for validation in spec.get("validations", []):
        held = _evaluate(validation["expression"], values)
        if held is True or (held is None and not fail):
            continue
        message = validation.get("message") or f"failed expression: {validation['expression']}"
        reason = validation.get("reason", "Invalid")
        raise ApiError(
            _STATUS.get(reason, 422),
            reason,
            f'{resource} "{request["name"]}" is forbidden: ValidatingAdmissionPolicy '
            f"'{names[0]}' with binding '{names[1]}' denied request: {message}",
        )


def _covers(rule: dict[str, Any], kind: ResourceType, resource: str, operation: str) -> bool:
    def listed(values: list[str], value: str) -> bool:
        return "*" in values or value in values

    return (
        listed(rule.get("apiGroups", []), kind.group)
        and listed(rule.get("apiVersions", ["*"]), kind.version)
        and listed(rule.get("resources", []), resource)
        and listed(rule.get("operations", []), operation)
    )


def _evaluate(expression: str, values: dict[str, Any]) -> Any:
    """The expression's value (a CEL value; True/False for a condition), None when it fails."""
    from celpy import adapter, celtypes, evaluation  # noqa: PLC0415 (only when one is bound)

    try:
        program = _program(expression)
        activation = {
            name: adapter.json_to_cel(value)
            if name != "variables"
            else celtypes.MapType(
                {celtypes.StringType(k): v for k, v in value.items() if v is not None}
            )
            for name, value in values.items()
        }
        result = program.evaluate(activation)
    except Exception:
        return None
    if isinstance(result, evaluation.CELEvalError):
        return None
    if isinstance(result, celtypes.BoolType):
        return bool(result)
    return result


@functools.cache
def _program(expression: str) -> Any:
    import celpy  # noqa: PLC0415

    environment = celpy.Environment()
    return environment.program(environment.compile(expression))
