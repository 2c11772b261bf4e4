"""AccountGrants through the real operator process, the Kubernetes simulator and moto (issue
27 item 1): namespace security is granted account X and works, through the grant's role, with
its ExternalId and a session name naming the FlowExport; namespace audit naming account X is
refused with no AWS call (its endpoint is a recording proxy that sees nothing); granting audit
later (a label selector on its Namespace) makes it work without a restart; deleting the grant
refuses it again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from flowexport.aws.session import AwsKeys, AwsTarget, make_session
from flowexport.secrets import SECRET_TYPE_LABEL, SecretKind
from flowexport.sim.awsfaults import AWSFaultProxy
from flowexport.sim.serve import ServerThread
from tests.cloud import KEYS, REGION
from tests.e2e.conftest import MERGE, Stack, eventually

X = "210987654321"
MEMBER = f"arn:aws:iam::{X}:role/flowexport-member"
EXTERNAL_ID = "e2e-cluster-7f3a"
GRANTS = "/apis/flowexport.io/v1alpha1/accountgrants"
AUDIT = "audit"


def in_account_x(moto_url: str) -> boto3.Session:
    """A session in account X (moto: assuming a role of X acts there)."""
    target = AwsTarget(REGION, moto_url, f"arn:aws:iam::{X}:role/bench", AwsKeys("t", "t"))
    return make_session(target)


def grant(name: str, namespaces: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "flowexport.io/v1alpha1",
        "kind": "AccountGrant",
        "metadata": {"name": name},
        "spec": {
            "accountId": X,
            "roleArn": MEMBER,
            "externalId": EXTERNAL_ID,
            "namespaces": namespaces,
        },
    }


def assumed(moto_url: str) -> list[dict[str, Any]]:
    """The sessions moto's STS made (it records each AssumeRole with its ExternalId)."""
    data = httpx.get(f"{moto_url}/moto-api/data.json", timeout=10).json()
    return [
        {k: r[k] for k in ("session_name", "external_id", "role_arn")}
        for r in data.get("sts", {}).get("AssumedRole", [])
    ]


@pytest.fixture
def proxy(stack: Stack) -> Iterator[tuple[AWSFaultProxy, str]]:
    """A recording proxy in front of moto: every AWS request through it is a hit."""
    recorder = AWSFaultProxy(stack.loop.moto_url)
    with ServerThread(recorder.app) as url:
        yield recorder, url


@pytest.fixture
def world(stack: Stack) -> dict[str, str]:
    """Account X's VPC and delivery role; namespace audit with its Secrets; the operator
    restarted to watch security and audit with AWS keys of its own (its 'pod identity')."""
    x = in_account_x(stack.loop.moto_url)
    vpc = x.client("ec2", endpoint_url=stack.loop.moto_url).create_vpc(CidrBlock="10.9.0.0/16")
    iam = x.client("iam", endpoint_url=stack.loop.moto_url)
    role = iam.create_role(RoleName="flow-logs-delivery", AssumeRolePolicyDocument="{}")
    stack.loop.create("/api/v1/namespaces", {"metadata": {"name": AUDIT}})
    secret = {
        "metadata": {
            "name": "pce-key",
            "labels": {SECRET_TYPE_LABEL: str(SecretKind.PCE_CREDENTIALS)},
        },
        "stringData": stack.loop.pce.credentials(),
    }
    stack.loop.create(f"/api/v1/namespaces/{AUDIT}/secrets", secret)
    operator = stack.operator
    operator.stop()
    operator.namespace = None
    operator.args = [
        *stack.loop.allow_pce(),
        *("--namespace", "security", "--namespace", AUDIT),
        *("--resync-seconds", "3", "--verbose"),
    ]
    operator.env.update(
        {"AWS_ACCESS_KEY_ID": KEYS.access_key_id, "AWS_SECRET_ACCESS_KEY": KEYS.secret_access_key}
    )
    operator.start()
    return {"vpc": vpc["Vpc"]["VpcId"], "role": role["Role"]["Arn"]}


def flowexport(
    stack: Stack, world: dict[str, str], namespace: str, name: str, url: str
) -> dict[str, Any]:
    body = stack.flowexport(name)
    body["metadata"]["namespace"] = namespace
    aws = body["spec"]["aws"]
    del aws["credentialsSecretRef"]  # the operator's own identity, lent through the grant
    aws.update(accountId=X, vpcId=world["vpc"], deliverLogsRoleArn=world["role"], endpointUrl=url)
    return body


def condition(stack: Stack, namespace: str, name: str, type_: str) -> tuple[str, str, str] | None:
    path = f"/apis/flowexport.io/v1alpha1/namespaces/{namespace}/flowexports/{name}"
    for c in stack.kube.get(path).json().get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c["status"], c["reason"], c.get("message", "")
    return None


def apply(stack: Stack, body: dict[str, Any]) -> None:
    namespace = body["metadata"]["namespace"]
    answer = stack.kube.post(
        f"/apis/flowexport.io/v1alpha1/namespaces/{namespace}/flowexports", json=body
    )
    assert answer.status_code == 201, answer.text


def test_a_granted_namespace_works_and_another_is_refused_until_granted(
    stack: Stack, world: dict[str, str], proxy: tuple[AWSFaultProxy, str]
) -> None:
    recorder, proxy_url = proxy
    moto_url = stack.loop.moto_url
    made = stack.kube.post(GRANTS, json=grant("security-x", {"names": ["security"]}))
    assert made.status_code == 201, made.text

    # security: granted; the grant's role, its ExternalId, a session naming the FlowExport
    apply(stack, flowexport(stack, world, "security", "prod", moto_url))
    eventually(
        lambda: (condition(stack, "security", "prod", "SubscriptionReady") or ("",))[0] == "True",
        what="security/prod subscribed through the grant",
    )
    sessions = assumed(moto_url)
    assert {
        "session_name": "fx-security-prod",
        "external_id": EXTERNAL_ID,
        "role_arn": MEMBER,
    } in sessions
    log_groups = in_account_x(moto_url).client("logs", endpoint_url=moto_url)
    assert "/flowexport/prod" in [
        g["logGroupName"] for g in log_groups.describe_log_groups()["logGroups"]
    ]

    # audit: not granted: refused, and not one AWS request went out for it
    apply(stack, flowexport(stack, world, AUDIT, "other", proxy_url))
    refused = eventually(
        lambda: condition(stack, AUDIT, "other", "SubscriptionReady"), what="audit/other refused"
    )
    assert refused[:2] == ("False", "AccountNotGranted"), refused
    assert "namespace audit may not use AWS account 210987654321" in refused[2]
    assert "security-x" in refused[2] and EXTERNAL_ID not in refused[2]
    ready = eventually(lambda: condition(stack, AUDIT, "other", "Ready"), what="Ready")
    assert ready[:2] == ("False", "AccountNotGranted")
    assert recorder.hits == []
    assert not [s for s in assumed(moto_url) if s["session_name"] == "fx-audit-other"]

    # the grant's status: read, used by one FlowExport
    status = eventually(
        lambda: (
            stack.kube.get(f"{GRANTS}/security-x").json().get("status", {}).get("flowExports") == 1
            and stack.kube.get(f"{GRANTS}/security-x").json()["status"]
        ),
        what="the grant's status",
    )
    assert status["observedGeneration"] == 1
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [("Ready", "True")]

    # audit granted later by a label on its Namespace: works without a restart
    pid = stack.operator.process.pid if stack.operator.process else None
    labelled = stack.kube.patch(
        f"/api/v1/namespaces/{AUDIT}",
        content=json.dumps({"metadata": {"labels": {"flowexport.io/team": "audit"}}}),
        headers=MERGE,
    )
    assert labelled.is_success, labelled.text
    by_label = grant("audit-x", {"selector": {"matchLabels": {"flowexport.io/team": "audit"}}})
    assert stack.kube.post(GRANTS, json=by_label).status_code == 201
    eventually(
        lambda: (condition(stack, AUDIT, "other", "SubscriptionReady") or ("",))[0] == "True",
        what="audit/other subscribed once granted",
    )
    assert stack.operator.process is not None and stack.operator.process.pid == pid
    operations = {(h.service, h.operation) for h in recorder.hits}
    assert ("sts", "AssumeRole") in operations
    assert {
        "session_name": "fx-audit-other",
        "external_id": EXTERNAL_ID,
        "role_arn": MEMBER,
    } in assumed(moto_url)

    # the grant deleted: refused again, and the worker's AWS calls stop
    assert stack.kube.delete(f"{GRANTS}/audit-x").is_success
    again = eventually(
        lambda: (
            (condition(stack, AUDIT, "other", "SubscriptionReady") or ("", ""))[1]
            == "AccountNotGranted"
            and condition(stack, AUDIT, "other", "SubscriptionReady")
        ),
        what="audit/other refused again",
    )
    assert "no AccountGrant" in again[2] or "may not use" in again[2]
    eventually(
        lambda: (
            (condition(stack, AUDIT, "other", "Ready") or ("", ""))[:2]
            == ("False", "AccountNotGranted")
        ),
        what="Ready False again",
    )
    # security keeps working through its own grant
    assert (condition(stack, "security", "prod", "SubscriptionReady") or ("",))[0] == "True"


def test_a_role_other_than_the_granted_one_is_refused(
    stack: Stack, world: dict[str, str], proxy: tuple[AWSFaultProxy, str]
) -> None:
    recorder, proxy_url = proxy
    assert (
        stack.kube.post(GRANTS, json=grant("security-x", {"names": ["security"]})).status_code
        == 201
    )
    body = flowexport(stack, world, "security", "admin", proxy_url)
    body["spec"]["aws"]["roleArn"] = f"arn:aws:iam::{X}:role/flowexport-admin"
    apply(stack, body)
    refused = eventually(
        lambda: condition(stack, "security", "admin", "SubscriptionReady"), what="refused"
    )
    assert refused[:2] == ("False", "AccountNotGranted") and "is not the role granted" in refused[2]
    assert recorder.hits == []
