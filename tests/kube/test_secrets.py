"""The operator is no confused deputy: it uses only Secrets labelled for their use, releases
PCE credentials only for allowed hosts, and says which label or value is wrong."""

from __future__ import annotations

from flowexport.kube.reconcile import reconcile
from flowexport.kube.secrets import KubeSecrets
from flowexport.secrets import SecretKind
from flowexport.urls import endpoint_of
from tests.kube.conftest import NS, World
from tests.kube.fakes import operator
from tests.pcesim import API_KEY, API_SECRET


async def test_an_unlabelled_secret_is_not_used_and_the_condition_names_the_label(
    world: World,
) -> None:
    world.kube.put_secret(NS, "pce-key", {"username": API_KEY, "password": API_SECRET})
    await reconcile(world.op, world.export(), world.body())
    assert world.condition("PCEReachable") == ("False", "SecretNotLabelled")
    message = next(m for _, r, m in world.events.posted if r == "SecretNotLabelled")
    assert "flowexport.io/secret-type=pce-credentials" in message
    assert world.pce.requests() == []  # nothing was sent anywhere


async def test_a_secret_labelled_for_another_use_is_not_used(world: World) -> None:
    values = {"username": API_KEY, "password": API_SECRET}
    world.kube.put_secret(NS, "pce-key", values, SecretKind.AWS_CREDENTIALS)
    await reconcile(world.op, world.export(), world.body())
    assert world.condition("PCEReachable") == ("False", "SecretNotLabelled")
    message = next(m for _, r, m in world.events.posted if r == "SecretNotLabelled")
    assert "it is labelled aws-credentials" in message


async def test_a_value_that_is_not_text_is_reported_as_such(world: World) -> None:
    world.kube.put_secret(
        NS, "pce-key", {"username": API_KEY}, SecretKind.PCE_CREDENTIALS, not_text=("password",)
    )
    await reconcile(world.op, world.export(), world.body())
    assert world.condition("PCEReachable") == ("False", "SecretInvalid")
    message = next(m for _, r, m in world.events.posted if r == "SecretInvalid")
    assert "key password is not UTF-8 text" in message


async def test_credentials_go_only_to_allowed_pce_hosts_and_ports(world: World) -> None:
    """Issue 23 item 8: the host alone let another port of it have the key."""
    host, port = endpoint_of(world.pce.url)
    for allowed in (set(), {("pce.example.com", 443)}, {(host, 443)}, {(host, port + 1)}):
        world.op = operator(world.kube, world.events)
        world.op.allowed_pce_hosts = frozenset(allowed)
        await reconcile(world.op, world.export(), world.body())
        assert world.condition("PCEReachable") == ("False", "PCEHostNotAllowed"), allowed
        assert world.pce.requests() == []
    message = next(m for _, r, m in reversed(world.events.posted) if r == "PCEHostNotAllowed")
    assert f"--allowed-pce-host {host}:{port}" in message
    assert API_SECRET not in message
    world.op.allowed_pce_hosts = frozenset({(host, port)})
    world.op.exports.clear()
    await reconcile(world.op, world.export(), world.body())
    assert world.condition("PCEReachable") == ("True", "Reachable")


async def test_an_operator_that_allows_no_pce_sends_no_key(world: World) -> None:
    world.op = operator(world.kube, world.events)  # as `flowexport run` without the flag
    await reconcile(world.op, world.export(), world.body())
    assert world.condition("PCEReachable") == ("False", "PCEHostNotAllowed")
    assert world.pce.requests() == []


async def test_aws_keys_are_not_bound_to_the_pce_host(world: World) -> None:
    secrets = KubeSecrets(
        world.kube, NS, pce=("evil.example", 443), allowed=frozenset({("x", 443)})
    )
    assert await secrets.read("aws-keys", SecretKind.AWS_CREDENTIALS) is not None
