"""The operator's parts in-process: fake Kubernetes edges, real moto and PCE simulator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from flowexport.kube import metrics
from flowexport.kube.state import Export, Operator
from flowexport.secrets import SecretKind
from tests.cloud import KEYS, Cloud, cloud
from tests.flowlines import put_connections
from tests.kube.fakes import FakeKube, RecordingEvents, body, operator
from tests.pcesim import API_KEY, API_SECRET, SimPCE

__all__ = ["World", "cloud", "world"]

NS = "security"

PCE = SecretKind.PCE_CREDENTIALS


@dataclass
class World:
    """moto, the PCE simulator, a fake API with the Secrets, and an Operator wired to them."""

    cloud: Cloud
    pce: SimPCE
    kube: FakeKube
    events: RecordingEvents
    op: Operator

    def spec(self, **overrides: Any) -> dict[str, Any]:
        """A FlowExport spec reading /flowexport/<name> in moto, uploading to the simulator;
        `overrides` are dotted paths (`pce.orgId`)."""
        spec: dict[str, Any] = {
            "aws": {
                "region": "us-east-1",
                "vpcId": self.cloud.vpc_id,
                "logGroupName": "/flowexport/prod",
                "deliverLogsRoleArn": self.cloud.role_arn,
                "endpointUrl": self.cloud.url,
                "credentialsSecretRef": {"name": "aws-keys"},
            },
            "pce": {"url": self.pce.url, "orgId": 1, "credentialsSecretRef": {"name": "pce-key"}},
            "ingestion": {"pollIntervalSeconds": 1, "lookbackSeconds": 900},
        }
        for path, value in overrides.items():
            *parents, leaf = path.split(".")
            node = spec
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return spec

    def body(self, name: str = "prod", generation: int = 1, **overrides: Any) -> dict[str, Any]:
        return body(NS, name, self.spec(**overrides), generation)

    def export(self, name: str = "prod") -> Export:
        return self.op.export(NS, name, self.kube.status(NS, name))

    def condition(self, type_: str, name: str = "prod") -> tuple[str, str] | None:
        return self.kube.condition(NS, name, type_)

    def status(self, name: str = "prod") -> dict[str, Any]:
        return self.kube.status(NS, name)

    def write_flows(
        self, count: int, start: int = 0, group: str = "/flowexport/prod", **values: Any
    ) -> None:
        put_connections(self.cloud.clients.logs, group, count, start, **values)

    def received(self) -> list[tuple[str, ...]]:
        """The flows the simulator holds: (src, dst, port, proto)."""
        flows = self.pce.call(lambda: list(self.pce.sim.state.flows))
        return [tuple(str(v) for v in f) for f in flows]


@pytest.fixture
def world(cloud: Cloud, pce: SimPCE) -> Iterator[World]:
    kube = FakeKube()
    kube.put_secret(NS, "pce-key", {"username": API_KEY, "password": API_SECRET}, PCE)
    kube.put_secret(
        NS,
        "aws-keys",
        {"aws_access_key_id": KEYS.access_key_id, "aws_secret_access_key": KEYS.secret_access_key},
        SecretKind.AWS_CREDENTIALS,
    )
    events = RecordingEvents()
    yield World(cloud, pce, kube, events, operator(kube, events, allowed_pce_urls=[pce.url]))
    metrics.forget(NS, "prod")
