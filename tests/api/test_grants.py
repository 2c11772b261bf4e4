"""AccountGrant: the models, the CRD generated from them, who a grant covers (`resolve`), and
the AssumeRole session name naming the FlowExport."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from flowexport.api.crd import ACCOUNTGRANT_CRD, build_crd
from flowexport.api.grants import (
    AccountAccess,
    AccountGrant,
    AccountGrantSpec,
    AccountNotGrantedError,
    Grant,
    LabelSelector,
    namespace_session_name,
    parse_grant,
    resolve,
    session_name,
)
from flowexport.api.validation import SpecError, parse_spec
from flowexport.errors import Reason
from flowexport.sim.kube.schema import prune_and_default
from flowexport.sim.kube.structural import field_errors
from tests.api.test_models import minimal_spec

X = "210987654321"
Y = "109876543210"
ROLE_X = f"arn:aws:iam::{X}:role/flowexport-member"
ROLE_Y = f"arn:aws:iam::{Y}:role/flowexport-member"


def spec(**fields: Any) -> AccountGrantSpec:
    body: dict[str, Any] = {
        "accountId": X,
        "roleArn": ROLE_X,
        "externalId": "fx-cluster-1",
        "namespaces": {"names": ["payments"]},
    }
    body.update(fields)
    return AccountGrantSpec.model_validate(body)


def grant(name: str = "payments-x", **fields: Any) -> Grant:
    return Grant(name, spec(**fields), 1)


# -- the models and the CRD -----------------------------------------------------------------


def test_a_grant_round_trips_in_camel_case() -> None:
    parsed = spec(regions=["eu-west-1"])
    assert parsed.model_dump(by_alias=True, exclude_none=True) == {
        "accountId": X,
        "roleArn": ROLE_X,
        "externalId": "fx-cluster-1",
        "namespaces": {"names": ["payments"]},
        "sessionNames": "FlowExport",
        "regions": ["eu-west-1"],
    }
    whole = AccountGrant.model_validate(
        {"metadata": {"name": "g"}, "spec": parsed.model_dump(by_alias=True, exclude_none=True)}
    )
    assert whole.kind == "AccountGrant" and whole.api_version == "flowexport.io/v1alpha1"


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"roleArn": ROLE_Y}, "accountId's account"),
        ({"accountId": "2109876543"}, "accountId"),
        ({"namespaces": {}}, "name namespaces"),
        ({"externalId": "x"}, "externalId"),
        ({"externalId": "has space"}, "externalId"),
        ({"regions": ["Mars"]}, "regions"),
        ({"namespaces": {"names": ["Not_A_Namespace"]}}, "names"),
        ({"extra": 1}, "extra"),
    ],
)
def test_the_models_refuse(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        spec(**fields)


def test_a_selector_needs_values_only_where_kubernetes_does() -> None:
    with pytest.raises(ValidationError, match="needs values"):
        LabelSelector.model_validate({"matchExpressions": [{"key": "t", "operator": "In"}]})
    with pytest.raises(ValidationError, match="takes no values"):
        LabelSelector.model_validate(
            {"matchExpressions": [{"key": "t", "operator": "Exists", "values": ["a"]}]}
        )


def _crd_schema() -> dict[str, Any]:
    schema: dict[str, Any] = build_crd(ACCOUNTGRANT_CRD)["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]
    return schema


@pytest.mark.parametrize(
    ("fields", "valid"),
    [
        ({}, True),
        ({"roleArn": ROLE_Y}, False),
        ({"namespaces": {"selector": {}}}, True),
        ({"namespaces": {}}, False),
        ({"externalId": "x"}, False),
        ({"regions": ["eu-west-1"]}, True),
    ],
)
def test_the_crd_and_the_models_agree(fields: dict[str, Any], valid: bool) -> None:
    body: dict[str, Any] = {
        "apiVersion": "flowexport.io/v1alpha1",
        "kind": "AccountGrant",
        "metadata": {"name": "g"},
        "spec": {
            "accountId": X,
            "roleArn": ROLE_X,
            "namespaces": {"names": ["payments"]},
            **fields,
        },
    }
    schema = _crd_schema()
    problems = field_errors(prune_and_default(body, schema, []), schema)
    try:
        AccountGrantSpec.model_validate(body["spec"])
        models = True
    except ValidationError:
        models = False
    assert (not problems) is valid, problems
    assert models is valid


def test_the_crd_is_cluster_scoped_with_a_status_subresource() -> None:
    crd = build_crd(ACCOUNTGRANT_CRD)
    assert crd["metadata"]["name"] == "accountgrants.flowexport.io"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["shortNames"] == ["fxgrant"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Account",
        "Role",
        "Ready",
        "FlowExports",
        "Age",
    ]


def test_flowexport_account_id_and_its_rules() -> None:
    parsed = parse_spec(minimal_spec(**{"aws.accountId": X}))
    assert parsed.aws.account == X
    assert parse_spec(minimal_spec(**{"aws.roleArn": ROLE_Y})).aws.account == Y
    assert parse_spec(minimal_spec()).aws.account is None
    with pytest.raises(SpecError, match="accountId's account"):
        parse_spec(minimal_spec(**{"aws.accountId": X, "aws.roleArn": ROLE_Y}))
    # with the namespace's own keys, accountId only documents their account
    keys = {"aws.accountId": X, "aws.credentialsSecretRef": {"name": "k"}}
    assert parse_spec(minimal_spec(**keys)).aws.account == X
    with pytest.raises(SpecError):
        parse_spec(minimal_spec(**{"aws.accountId": "12"}))


# -- resolve ---------------------------------------------------------------------------------


def test_a_named_namespace_gets_the_grants_role_and_external_id() -> None:
    access = resolve([grant()], "payments", {}, X, "us-east-1")
    assert access == AccountAccess(X, ROLE_X, "fx-cluster-1", "payments-x")


def test_a_namespace_not_named_is_refused_saying_which_grant() -> None:
    with pytest.raises(AccountNotGrantedError) as caught:
        resolve([grant()], "audit", {}, X)
    assert caught.value.reason is Reason.ACCOUNT_NOT_GRANTED and not caught.value.retryable
    assert "namespace audit may not use AWS account 210987654321" in str(caught.value)
    assert "payments-x" in str(caught.value) and "fx-cluster-1" not in str(caught.value)


def test_an_account_without_any_grant_is_refused() -> None:
    with pytest.raises(AccountNotGrantedError, match=f"no AccountGrant grants AWS account {Y}"):
        resolve([grant()], "payments", {}, Y)


@pytest.mark.parametrize(
    ("selector", "labels", "covered"),
    [
        ({"matchLabels": {"team": "payments"}}, {"team": "payments"}, True),
        ({"matchLabels": {"team": "payments"}}, {"team": "audit"}, False),
        ({"matchLabels": {"team": "payments"}}, None, False),  # labels not known
        ({}, {}, True),  # an empty selector selects every namespace
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
         {"tier": "b"}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
         {"tier": "a"}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
         {}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {}, True),
        ({"matchLabels": {"team": "p"}, "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod"]}]},
         {"team": "p", "env": "dev"}, False),
    ],
)  # fmt: skip
def test_namespaces_by_label_selector(
    selector: dict[str, Any], labels: dict[str, str] | None, covered: bool
) -> None:
    g = grant(namespaces={"selector": selector})
    if covered:
        assert resolve([g], "team-ns", labels, X).grant_name == "payments-x"
    else:
        with pytest.raises(AccountNotGrantedError):
            resolve([g], "team-ns", labels, X)


def test_regions_limit_a_grant() -> None:
    g = grant(regions=["eu-west-1"])
    assert resolve([g], "payments", {}, X, "eu-west-1").role_arn == ROLE_X
    assert resolve([g], "payments", {}, X, None).role_arn == ROLE_X  # region not asked
    with pytest.raises(AccountNotGrantedError, match="region us-east-1 is not granted"):
        resolve([g], "payments", {}, X, "us-east-1")


def test_a_role_arn_must_be_the_granted_role() -> None:
    other = f"arn:aws:iam::{X}:role/flowexport-admin"
    assert resolve([grant()], "payments", {}, X, role_arn=ROLE_X).role_arn == ROLE_X
    with pytest.raises(AccountNotGrantedError, match="is not the role granted"):
        resolve([grant()], "payments", {}, X, role_arn=other)
    # two grants of one account with two roles: roleArn picks, else the first by name
    both = [grant("b-admin", roleArn=other), grant("a-member")]
    assert resolve(both, "payments", {}, X, role_arn=other).grant_name == "b-admin"
    assert resolve(both, "payments", {}, X).grant_name == "a-member"


def test_the_operators_own_identity_needs_a_grant_without_role() -> None:
    own = grant("own", roleArn=None, externalId=None, accountId="123456789012")
    with pytest.raises(AccountNotGrantedError, match="the operator's own AWS identity"):
        resolve([grant()], "payments", {}, None)
    access = resolve([grant(), own], "payments", {}, None)
    assert access == AccountAccess("123456789012", None, None, "own")
    # and naming that account uses it too
    assert resolve([own], "payments", {}, "123456789012").role_arn is None


def test_parse_grant_reads_the_api_object() -> None:
    body = {
        "metadata": {"name": "g", "generation": 3},
        "spec": spec().model_dump(by_alias=True, exclude_none=True),
    }
    parsed = parse_grant(body)
    assert (parsed.name, parsed.generation, parsed.spec.account_id) == ("g", 3, X)


# -- the session name ------------------------------------------------------------------------

SESSION = re.compile(r"^[\w+=,.@-]{2,64}$", re.ASCII)
DNS_LABEL = st.from_regex(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", fullmatch=True)
DNS_NAME = st.from_regex(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", fullmatch=True)


@given(DNS_LABEL, DNS_NAME)
def test_session_names_follow_stss_rule(namespace: str, name: str) -> None:
    made = session_name(namespace, name)
    assert SESSION.match(made), made
    if len(f"fx-{namespace}-{name}") <= 64:
        assert made == f"fx-{namespace}-{name}"  # readable as it is


@given(DNS_LABEL, DNS_NAME, DNS_NAME)
def test_long_names_stay_apart(namespace: str, one: str, other: str) -> None:
    if one != other:
        assert session_name(namespace, one) != session_name(namespace, other)


@given(st.text(max_size=300), st.text(max_size=300))
def test_any_text_makes_a_valid_session_name(namespace: str, name: str) -> None:
    assert SESSION.match(session_name(namespace, name))


def test_session_names_per_namespace_are_the_grants_choice() -> None:
    per_flowexport = resolve([grant()], "payments", {}, X)
    assert per_flowexport.session_name is None  # the front end names the FlowExport
    shared = resolve([grant(sessionNames="Namespace")], "payments", {}, X)
    assert shared.session_name == "fx-payments"
    # no role, no session: the operator's own identity assumes nothing
    own = grant("own", roleArn=None, externalId=None, sessionNames="Namespace")
    assert resolve([own], "payments", {}, None).session_name is None
    with pytest.raises(ValidationError):
        spec(sessionNames="Cluster")


@given(st.text(max_size=300))
def test_namespace_session_names_follow_stss_rule(namespace: str) -> None:
    assert SESSION.match(namespace_session_name(namespace))


GRANT_EXAMPLES = (
    Path(__file__).resolve().parents[2] / "examples" / "accounts" / "accountgrants.yaml"
)


@pytest.mark.parametrize(
    "doc",
    [d for d in yaml.safe_load_all(GRANT_EXAMPLES.read_text()) if d],
    ids=lambda d: d["metadata"]["name"],
)
def test_the_example_grants_are_valid_for_the_models_and_the_crd_schema(
    doc: dict[str, Any],
) -> None:
    assert doc["kind"] == "AccountGrant"
    AccountGrantSpec.model_validate(doc["spec"])
    (version,) = build_crd(ACCOUNTGRANT_CRD)["spec"]["versions"]
    jsonschema.validate(doc, version["schema"]["openAPIV3Schema"])
