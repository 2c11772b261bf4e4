"""A fresh moto account per test (moto in server mode, one process per session, reset per test)."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from flowexport.api.models import AwsSpec, FlowExportSpec
from flowexport.aws.session import AwsClients, AwsKeys, AwsTarget, make_clients
from tests.moto_server import reset

REGION = "us-east-1"
KEYS = AwsKeys("AKIAFLOWEXPORTTEST", "moto-secret-key-not-real")


@dataclass
class Cloud:
    """A fresh moto account with a VPC and a flow-log delivery role."""

    url: str
    clients: AwsClients
    vpc_id: str
    role_arn: str

    def spec(self, **overrides: Any) -> AwsSpec:
        values: dict[str, Any] = {
            "region": REGION,
            "vpcId": self.vpc_id,
            "logGroupName": "/flowexport/test",
            "deliverLogsRoleArn": self.role_arn,
            "endpointUrl": self.url,
        }
        values.update(overrides)
        return AwsSpec.model_validate(values)

    def flowexport_spec(self, **sections: Any) -> FlowExportSpec:
        """A whole FlowExport spec reading this account (its `spec()`), to a PCE that is never
        called; `sections` (workloads, source, ...) added as given."""
        return FlowExportSpec.model_validate(
            {
                "aws": self.spec().model_dump(by_alias=True, exclude_none=True),
                "pce": {
                    "url": "https://pce.example.com",
                    "orgId": 1,
                    "credentialsSecretRef": {"name": "k"},
                },
                **sections,
            }
        )

    def lambda_subscription(
        self, group: str, name: str, clients: dict[str, Any] | None = None
    ) -> str:
        """A Lambda function subscribed to `group` (as the original Lambda was); its ARN.
        `clients` (service -> client) are used where given, e.g. a test bench's."""
        given = clients or {}

        def raw(service: str) -> Any:
            return given[service] if service in given else self.raw(service)

        role = raw("iam").create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")[
            "Role"
        ]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("handler.py", "def handler(event, context):\n    return None\n")
        function = raw("lambda").create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=role,
            Handler="handler.handler",
            Code={"ZipFile": code.getvalue()},
        )["FunctionArn"]
        raw("logs").put_subscription_filter(
            logGroupName=group, filterName=name, filterPattern="", destinationArn=function
        )
        return str(function)

    def raw(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=KEYS.access_key_id,
            aws_secret_access_key=KEYS.secret_access_key,
        )


@pytest.fixture
def cloud(moto_url: str) -> Cloud:
    reset(moto_url)
    clients = make_clients(AwsTarget(REGION, endpoint_url=moto_url, keys=KEYS))
    vpc_id = clients.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    iam = boto3.client(
        "iam",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id=KEYS.access_key_id,
        aws_secret_access_key=KEYS.secret_access_key,
    )
    role = iam.create_role(RoleName="flow-logs-delivery", AssumeRolePolicyDocument="{}")
    return Cloud(moto_url, clients, vpc_id, role["Role"]["Arn"])
