"""The operator's side of AccountGrants, in-process: GrantBook (what the watches keep, the
fingerprint a change is noticed by, each grant's status) and KubeSecrets.account_access (which
FlowExports need a grant, and that a refused one makes no AWS call)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from flowexport import lifecycle
from flowexport.api.grants import AccountAccess, AccountNotGrantedError
from flowexport.api.validation import parse_spec
from flowexport.aws.ownership import Owner
from flowexport.errors import Reason
from flowexport.kube.grants import AccountGrantsUnavailableError, GrantBook
from flowexport.kube.reconcile import reconcile, resync
from flowexport.kube.secrets import GRANT_KEY, KubeSecrets, secrets_changed
from tests.api.test_models import minimal_spec
from tests.kube.conftest import NS, World
from tests.kube.fakes import FakeKube

X = "210987654321"
ROLE = f"arn:aws:iam::{X}:role/flowexport-member"


def grant_body(name: str = "sec-x", generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "generation": generation},
        "spec": {
            "accountId": X,
            "roleArn": ROLE,
            "externalId": "ext-1",
            "namespaces": {"names": [NS]},
            **spec,
        },
    }


def book(*grants: dict[str, Any], labels: dict[str, dict[str, str]] | None = None) -> GrantBook:
    made = GrantBook()
    for body in grants:
        made.put(body)
    for namespace, values in (labels or {}).items():
        made.label(namespace, values)
    made.mark_synced()
    return made


# -- GrantBook --------------------------------------------------------------------------------


def test_nothing_is_decided_before_the_first_lists() -> None:
    made = GrantBook()
    made.put(grant_body())
    with pytest.raises(AccountGrantsUnavailableError) as caught:
        made.resolve(NS, X)
    assert caught.value.retryable and caught.value.reason is Reason.ACCOUNT_GRANTS_UNAVAILABLE
    made.mark_synced("grants")
    with pytest.raises(AccountGrantsUnavailableError):
        made.resolve(NS, X)  # the namespaces are not listed yet either
    made.mark_synced("namespaces")
    assert made.resolve(NS, X) == AccountAccess(X, ROLE, "ext-1", "sec-x")


def test_the_fingerprint_moves_with_every_change_that_matters() -> None:
    made = book(grant_body(namespaces={"selector": {"matchLabels": {"team": "sec"}}}))
    seen = [made.fingerprint(NS, X, "us-east-1", None)]
    assert seen[0].startswith("AccountNotGranted")  # no labels yet
    made.label(NS, {"team": "sec"})
    seen.append(made.fingerprint(NS, X, "us-east-1", None))
    made.put(grant_body(generation=2, externalId="ext-2", namespaces={"names": [NS]}))
    seen.append(made.fingerprint(NS, X, "us-east-1", None))
    made.put(grant_body(generation=3, regions=["eu-west-1"], namespaces={"names": [NS]}))
    seen.append(made.fingerprint(NS, X, "us-east-1", None))
    made.remove("sec-x")
    seen.append(made.fingerprint(NS, X, "us-east-1", None))
    assert len(set(seen)) == len(seen), seen
    assert "ext-2" not in seen[2] or "AccountAccess" in seen[2]  # repr is in memory only
    # a change elsewhere does not move it
    made.label("other", {"team": "sec"})
    assert made.fingerprint(NS, X, "us-east-1", None) == seen[-1]


def test_a_grant_the_models_refuse_is_not_used_and_says_why() -> None:
    made = book(grant_body(namespaces={"selector": {"matchExpressions": [
        {"key": "team", "operator": "In"}]}}))  # fmt: skip
    with pytest.raises(AccountNotGrantedError):
        made.resolve(NS, X)
    (status,) = made.statuses().values()
    assert status["ready"][:2] == ("False", "InvalidSpec")
    assert "needs values" in status["ready"][2]


def test_statuses_count_the_flowexports_using_each_grant() -> None:
    made = book(grant_body(), grant_body("other", namespaces={"names": ["x"]}))
    made.use(NS, "a", "sec-x")
    made.use(NS, "b", "sec-x")
    made.use(NS, "b", None)
    statuses = made.statuses()
    assert statuses["sec-x"]["flowExports"] == 1 and statuses["other"]["flowExports"] == 0
    assert statuses["sec-x"]["ready"][:2] == ("True", "Accepted")
    assert statuses["sec-x"]["observedGeneration"] == 1
    assert GrantBook(count_users=False).statuses() == {}


# -- which FlowExports need a grant -----------------------------------------------------------


def secrets(grants: GrantBook | None, name: str = "prod") -> KubeSecrets:
    return KubeSecrets(FakeKube(), NS, name=name, grants=grants)


def aws(**fields: Any) -> Any:
    return parse_spec(minimal_spec(**{f"aws.{k}": v for k, v in fields.items()})).aws


async def test_a_granted_account_gets_the_grants_role_external_id_and_session() -> None:
    source = secrets(book(grant_body()))
    access = await source.account_access(aws(accountId=X))
    assert access == AccountAccess(X, ROLE, "ext-1", "sec-x", "fx-security-prod")
    assert await source.account_access(aws(roleArn=ROLE)) == access
    key = f"{GRANT_KEY}{X}|us-east-1|"
    assert source.versions[key].startswith("AccountAccess(")


async def test_own_keys_need_no_grant_and_keep_their_role() -> None:
    source = secrets(book())
    keys = {"credentialsSecretRef": {"name": "aws-keys"}}
    assert await source.account_access(aws(**keys)) is None
    assert await source.account_access(aws(accountId=X, **keys)) is None
    access = await source.account_access(aws(roleArn=ROLE, **keys))
    assert access == AccountAccess(X, ROLE, None, None, "fx-security-prod")
    assert source.versions == {}


async def test_the_operators_own_identity_needs_a_grant_too() -> None:
    with pytest.raises(AccountNotGrantedError, match="own AWS identity"):
        await secrets(book(grant_body())).account_access(aws())
    own = grant_body("own", accountId="123456789012", roleArn=None, externalId=None)
    assert await secrets(book(own)).account_access(aws()) == AccountAccess(
        "123456789012", None, None, "own", "fx-security-prod"
    )


async def test_with_grants_off_any_role_as_before_but_not_an_account_alone() -> None:
    source = secrets(None)
    assert await source.account_access(aws()) is None
    access = await source.account_access(aws(roleArn=ROLE))
    assert access == AccountAccess(X, ROLE, None, None, "fx-security-prod")
    with pytest.raises(AccountNotGrantedError, match="--account-grants Off"):
        await source.account_access(aws(accountId=X))


async def test_a_refused_flowexport_makes_no_aws_call(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []
    monkeypatch.setattr(lifecycle, "shared_clients", made.append)
    spec = parse_spec(minimal_spec(**{"aws.accountId": "109876543210"}))
    step = await lifecycle.subscribe(spec, Owner(NS, "prod"), secrets(book(grant_body())))
    assert step.error is not None and step.error.reason is Reason.ACCOUNT_NOT_GRANTED
    assert made == []  # no client was even made, let alone a call


async def test_a_grant_change_is_noticed_as_a_changed_secret_is() -> None:
    grants = book()
    source = secrets(grants)
    with pytest.raises(AccountNotGrantedError):
        await source.account_access(aws(accountId=X))
    assert await secrets_changed(source.api, source.versions, NS, grants) is None
    grants.put(grant_body())
    changed = await secrets_changed(source.api, source.versions, NS, grants)
    assert changed == f"AccountGrant for account {X}"


async def test_the_reconcile_refuses_and_a_grant_lets_it_through(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the operator's reconcile and resync against moto: refused with no AWS call
    (moto's account X has no log group afterwards), then subscribed once granted."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "operator-own")  # the pod's identity
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-own")
    grants = book()
    world.op.grants = grants
    body = world.body(**{"aws.accountId": X})
    del body["spec"]["aws"]["credentialsSecretRef"]
    await reconcile(world.op, world.export(), body)
    assert world.condition("SubscriptionReady") == ("False", "AccountNotGranted")
    assert world.condition("Ready") == ("False", "AccountNotGranted")
    assert await resync(world.op, world.export(), body) is False  # nothing changed
    grants.put(grant_body())
    assert await resync(world.op, world.export(), body) is True
    # the grant's role assumed, with its ExternalId and the FlowExport's session name; in
    # moto that acts in account X, where the test's VPC (of moto's default account) is not
    assert world.condition("SubscriptionReady") == ("False", "VPCNotFound")
    data = httpx.get(f"{world.cloud.url}/moto-api/data.json", timeout=10).json()
    sessions = {(r["session_name"], r["external_id"], r["role_arn"])
                for r in data["sts"]["AssumedRole"]}  # fmt: skip
    assert ("fx-security-prod", "ext-1", ROLE) in sessions


def test_the_status_written_keeps_its_transition_time_while_ready_holds() -> None:
    class Custom:
        def __init__(self) -> None:
            self.patches: list[dict[str, Any]] = []

        def patch_cluster_custom_object_status(self, *args: Any, **_: Any) -> None:
            self.patches.append(args[-1]["status"])

    custom = Custom()
    made = GrantBook(custom)  # type: ignore[arg-type]
    made.put(grant_body())
    made.use(NS, "a", "sec-x")
    made._write_status("sec-x", made.statuses()["sec-x"])
    made.use(NS, "b", "sec-x")
    made._write_status("sec-x", made.statuses()["sec-x"])
    first, second = custom.patches
    assert (first["flowExports"], second["flowExports"]) == (1, 2)
    (one,), (two,) = first["conditions"], second["conditions"]
    assert one["lastTransitionTime"] == two["lastTransitionTime"]
    assert (one["type"], one["status"], one["reason"]) == ("Ready", "True", "Accepted")


async def test_a_grant_may_share_one_session_per_namespace() -> None:
    source = secrets(book(grant_body(sessionNames="Namespace")), name="vpc-0042")
    access = await source.account_access(aws(accountId=X))
    assert access is not None and access.session_name == "fx-security"
    other = await secrets(
        book(grant_body(sessionNames="Namespace")), name="vpc-0043"
    ).account_access(aws(accountId=X))
    assert other == access  # one AwsTarget, so one AssumeRole and one client set for both
