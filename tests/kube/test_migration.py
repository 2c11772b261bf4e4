"""Migrating from the Lambda, played whole against moto and the PCE simulator: the Lambda-era
flow log (AWS's default format, 600 s aggregation) and its subscription filter; records before,
during and after the switch. Every record after the chosen start reaches the PCE once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from flowexport.core.logformat import DEFAULT_V2_FORMAT
from flowexport.kube.reconcile import reconcile
from tests.flowlines import connection_address, put_connections
from tests.kube.conftest import World
from tests.kube.test_worker import eventually, running

GROUP = "/flowexport/prod"


def lambda_era(world: World) -> str:
    """The existing setup: log group, default-format 600 s flow log, the Lambda's filter."""
    cloud = world.cloud
    cloud.clients.logs.create_log_group(logGroupName=GROUP)
    cloud.clients.ec2.create_flow_logs(
        ResourceIds=[cloud.vpc_id],
        ResourceType="VPC",
        TrafficType="ALL",
        LogDestinationType="cloud-watch-logs",
        LogGroupName=GROUP,
        DeliverLogsPermissionArn=cloud.role_arn,
        MaxAggregationInterval=600,
    )
    return cloud.lambda_subscription(GROUP, "vpc-flow-to-pce")


def write(world: World, count: int, start: int) -> None:
    put_connections(world.cloud.clients.logs, GROUP, count, start, fmt=DEFAULT_V2_FORMAT)
    time.sleep(0.05)  # ingestion times are milliseconds: keep the phases apart


async def test_the_whole_migration_loses_nothing_after_the_switch(world: World) -> None:
    lambda_era(world)
    write(world, 10, 0)  # handled by the Lambda before the switch
    switched = datetime.now(UTC)  # the Lambda is disabled here: the chosen start
    time.sleep(0.05)
    write(world, 10, 10)  # written while nothing exports
    # A first try that asks for something else than what exists: a conflict, reading nothing.
    body = world.body(
        **{
            "aws.maxAggregationInterval": 60,
            "ingestion.startFrom": switched.isoformat().replace("+00:00", "Z"),
        }
    )
    export = world.export()
    await reconcile(world.op, export, body)
    assert world.condition("SubscriptionReady") == ("False", "FlowLogConflict")
    message = next(m for _, r, m in world.events.posted if r == "FlowLogConflict")
    assert "maxAggregationInterval 600 (spec.aws asks 60)" in message
    write(world, 10, 20)  # still written while the FlowExport sits in conflict
    # The fix: leave the interval unset (adopt it) and remove the Lambda's filter.
    del body["spec"]["aws"]["maxAggregationInterval"]
    body["spec"]["aws"]["removeSubscriptionFilters"] = ["vpc-flow-to-pce"]
    body["metadata"]["generation"] = 2
    await reconcile(world.op, export, body)
    assert world.condition("SubscriptionReady") == ("True", "Subscribed")
    filters = world.cloud.clients.logs.describe_subscription_filters(logGroupName=GROUP)
    assert filters["subscriptionFilters"] == []
    async with running(world, export, body):
        write(world, 10, 30)  # after the switch
        expected = {connection_address(i) for i in range(10, 40)}
        await eventually(lambda: {f[0] for f in world.received()} >= expected, "every record")
        await asyncio.sleep(1.5)
    received = [f[0] for f in world.received()]
    assert set(received) == expected, "nothing before the chosen start, nothing after lost"
    assert len(received) == len(expected), "each record once"


async def test_start_from_now_is_taken_when_first_seen_not_when_ingestion_starts(
    world: World,
) -> None:
    lambda_era(world)
    body = world.body(**{"aws.maxAggregationInterval": 60})
    export = world.export()
    await reconcile(world.op, export, body)  # first seen: sits in conflict
    assert world.status()["cursor"]["ingestedThrough"] > 0
    time.sleep(0.05)
    write(world, 5, 0)  # written during the conflict
    del body["spec"]["aws"]["maxAggregationInterval"]
    body["metadata"]["generation"] = 2
    await reconcile(world.op, export, body)
    async with running(world, export, body):
        await eventually(lambda: len(world.received()) == 5, "the records of the conflict")
