"""AWS faults under the running operator, injected by a proxy in front of moto: throttling on
every read, credentials that expire mid-run, and their recovery, with nothing lost."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from flowexport.sim.awsfaults import AWSFaultProxy, FaultRule
from flowexport.sim.serve import ServerThread
from tests.e2e.conftest import MERGE, NS, Stack, eventually
from tests.faults.conftest import liveness_ms
from tests.faults.test_faults import delivered, ready
from tests.flowlines import put_connections


@pytest.fixture
def proxy(stack: Stack) -> Iterator[tuple[AWSFaultProxy, str]]:
    faults = AWSFaultProxy(stack.loop.moto_url)
    with ServerThread(faults.app) as url:
        yield faults, url


def test_throttling_on_every_read_is_explained_and_survived(
    stack: Stack, proxy: tuple[AWSFaultProxy, str]
) -> None:
    faults, url = proxy
    stack.apply(stack.flowexport(**{"aws.endpointUrl": url}))
    ready(stack)
    faults.set_faults([FaultRule(operation="FilterLogEvents", code="ThrottlingException")])
    put_connections(stack.aws("logs"), "/flowexport/prod", 12)
    eventually(
        lambda: stack.condition("prod", "Ingesting") == ("False", "AWSThrottled"),
        timeout=60,
        what="the throttling explained",
    )
    assert max(liveness_ms(stack) for _ in range(5)) < 1000
    assert delivered(stack)[0] == set()
    faults.clear()
    eventually(lambda: len(delivered(stack)[0]) == 12, timeout=90, what="12 flows after it")
    assert delivered(stack)[1] == 0
    ready(stack)


def test_credentials_expiring_mid_run_are_named_and_a_rotation_recovers(
    stack: Stack, proxy: tuple[AWSFaultProxy, str]
) -> None:
    faults, url = proxy
    stack.apply(stack.flowexport(**{"aws.endpointUrl": url}))
    ready(stack)
    faults.set_faults([FaultRule(service="logs", code="ExpiredTokenException", status=400)])
    put_connections(stack.aws("logs"), "/flowexport/prod", 8)
    eventually(
        lambda: stack.condition("prod", "Ingesting") == ("False", "AWSCredentialsInvalid"),
        timeout=60,
        what="the expiry explained",
    )
    assert stack.condition("prod", "Ready") == ("False", "AWSCredentialsInvalid")
    # The user rotates the keys Secret; the operator notices the change and starts over.
    faults.clear()
    rotated = {"stringData": {"aws_session_token": "rotated"}}
    secret = f"/api/v1/namespaces/{NS}/secrets/aws-keys"
    assert stack.kube.patch(secret, json=rotated, headers=MERGE).status_code == 200
    eventually(lambda: len(delivered(stack)[0]) == 8, timeout=90, what="8 flows after it")
    ready(stack)


def test_a_throttled_vpc_read_holds_the_uploads_until_the_first_workload_sync(
    stack: Stack, proxy: tuple[AWSFaultProxy, str]
) -> None:
    """The real operator process: with workloads Sync, AWS throttling DescribeNetworkInterfaces
    is explained on WorkloadsSynced, nothing is uploaded meanwhile (the records wait in the log
    group), and every flow arrives once the sync can run."""
    faults, url = proxy
    faults.set_faults(
        [FaultRule(operation="DescribeNetworkInterfaces", code="ThrottlingException")]
    )
    workloads = {"mode": "Sync", "labels": {"env": "prod"}}
    stack.apply(stack.flowexport(**{"aws.endpointUrl": url, "workloads": workloads}))
    eventually(
        lambda: stack.condition("prod", "WorkloadsSynced") == ("False", "AWSThrottled"),
        timeout=60,
        what="the throttling explained on WorkloadsSynced",
    )
    assert stack.condition("prod", "Reconciling") == ("True", "AWSThrottled")
    put_connections(stack.aws("logs"), "/flowexport/prod", 6)
    time.sleep(3)  # polls would have uploaded them by now
    assert delivered(stack)[0] == set()
    faults.clear()
    eventually(lambda: len(delivered(stack)[0]) == 6, timeout=90, what="6 flows after it")
    assert stack.condition("prod", "WorkloadsSynced") == ("True", "Synced")
    assert delivered(stack)[1] == 0
    ready(stack)
