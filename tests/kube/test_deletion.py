"""Deletion never deadlocks: the AWS keys Secret a clean-up needs is held by a finalizer until
the clean-up ran; a clean-up that cannot succeed says why; an admin can release it."""

from __future__ import annotations

import kopf
import pytest

from flowexport.kube.cleanup import SKIP_CLEANUP_ANNOTATION, clean_up
from flowexport.kube.reconcile import IN_USE_FINALIZER, reconcile
from tests.kube.conftest import NS, World


def finalizers(world: World, secret: str = "aws-keys") -> tuple[str, ...]:
    return world.kube.secrets[(NS, secret)].finalizers


async def test_the_keys_the_clean_up_needs_are_held_until_it_ran(world: World) -> None:
    body = world.body()
    await reconcile(world.op, world.export(), body)
    assert IN_USE_FINALIZER in finalizers(world)
    assert finalizers(world, "pce-key") == (), "the PCE key is not needed to clean up"
    await clean_up(world.op, body)
    assert finalizers(world) == ()
    assert world.cloud.clients.ec2.describe_flow_logs()["FlowLogs"] == []


async def test_a_secret_shared_by_two_exports_is_held_until_the_last_clean_up(
    world: World,
) -> None:
    first, second = (
        world.body("a", **{"aws.logGroupName": "/flowexport/a"}),
        world.body("b", **{"aws.logGroupName": "/flowexport/b"}),
    )
    await reconcile(world.op, world.export("a"), first)
    await reconcile(world.op, world.export("b"), second)
    await clean_up(world.op, first)
    assert IN_USE_FINALIZER in finalizers(world)
    await clean_up(world.op, second)
    assert finalizers(world) == ()


async def test_retain_and_observe_hold_nothing(world: World) -> None:
    await reconcile(world.op, world.export(), world.body(deletionPolicy="Retain"))
    assert finalizers(world) == ()


async def test_a_clean_up_that_cannot_succeed_says_why_and_how_to_release_it(
    world: World,
) -> None:
    body = world.body()
    await reconcile(world.op, world.export(), body)
    world.kube.delete_secret(NS, "aws-keys")  # e.g. removed by hand, finalizer and all
    with pytest.raises(kopf.TemporaryError):
        await clean_up(world.op, body)
    assert world.condition("SubscriptionReady") == ("False", "SecretNotFound")
    message = next(m for _, r, m in world.events.posted if r == "SecretNotFound")
    assert f"annotate it {SKIP_CLEANUP_ANNOTATION}=true" in message
    body["metadata"]["annotations"] = {SKIP_CLEANUP_ANNOTATION: "true"}
    await clean_up(world.op, body)  # released, AWS untouched
    assert "CleanupSkipped" in world.events.reasons("Warning")
    assert len(world.cloud.clients.ec2.describe_flow_logs()["FlowLogs"]) == 1


async def test_a_deletion_run_again_after_the_clean_up_finds_it_done(world: World) -> None:
    # kopf runs the deletion again when a daemon stops after the handlers: by then the keys
    # Secret the first clean-up released may be gone.
    body = world.body()
    body["metadata"]["uid"] = "uid-1"
    await reconcile(world.op, world.export(), body)
    await clean_up(world.op, body)
    world.kube.delete_secret(NS, "aws-keys")
    await clean_up(world.op, body)  # no SecretNotFound: done already
    assert "SecretNotFound" not in {r for _, r, _ in world.events.posted}
