"""An AWS organisation in moto (server mode): OUs, member accounts and their VPCs.

For the FlowExportSet tests and `bench/fleet_coverage.py`. moto keeps each account apart:
`create_account` makes a member with an `OrganizationAccountAccessRole`, and AssumeRole into
a role ARN of that account makes the following calls act there (moto checks neither trust
policies nor ExternalIds). Every account and region has moto's default VPC beside the ones
made here: tag the VPCs you mean to select.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3

#: moto's own (management) account.
MANAGEMENT = "123456789012"
#: The role `create_account` makes in every member.
MEMBER_ROLE = "OrganizationAccountAccessRole"
KEYS = {"aws_access_key_id": "fleet", "aws_secret_access_key": "fleet"}


def role_arn(account: str, role: str = MEMBER_ROLE) -> str:
    """The member role's ARN in `account`."""
    return f"arn:aws:iam::{account}:role/{role}"


@dataclass
class MotoFleet:
    """An organisation in moto: its root, OUs by name, member accounts by OU name."""

    url: str
    root: str = ""
    ous: dict[str, str] = field(default_factory=dict)
    accounts: dict[str, list[str]] = field(default_factory=dict)
    _credentials: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def client(self, service: str, account: str = MANAGEMENT, region: str = "us-east-1") -> Any:
        """A boto3 client acting in `account` (through its member role)."""
        return boto3.client(
            service, endpoint_url=self.url, region_name=region, **self._keys(account)
        )

    def _keys(self, account: str) -> dict[str, str]:
        if account == MANAGEMENT:
            return dict(KEYS)
        with self._lock:
            found = self._credentials.get(account)
        if found is None:
            sts = boto3.client("sts", endpoint_url=self.url, region_name="us-east-1", **KEYS)
            creds = sts.assume_role(RoleArn=role_arn(account), RoleSessionName="fleet-setup")[
                "Credentials"
            ]
            found = {
                "aws_access_key_id": creds["AccessKeyId"],
                "aws_secret_access_key": creds["SecretAccessKey"],
                "aws_session_token": creds["SessionToken"],
            }
            with self._lock:
                self._credentials[account] = found
        return found

    @property
    def members(self) -> list[str]:
        """Every member account made here, sorted."""
        return sorted(a for accounts in self.accounts.values() for a in accounts)

    def organise(self) -> str:
        """Create the organisation (management: moto's account); its root id."""
        org = self.client("organizations")
        org.create_organization(FeatureSet="ALL")
        self.root = str(org.list_roots()["Roots"][0]["Id"])
        return self.root

    def add_ou(self, name: str, parent: str | None = None) -> str:
        """An OU under `parent` (an OU name; None: the root); its id."""
        parent_id = self.ous[parent] if parent else self.root
        unit = self.client("organizations").create_organizational_unit(
            ParentId=parent_id, Name=name
        )
        self.ous[name] = str(unit["OrganizationalUnit"]["Id"])
        return self.ous[name]

    def add_accounts(self, ou: str | None, count: int) -> list[str]:
        """`count` member accounts, moved into OU `ou` (None: left in the root); their ids."""
        org = self.client("organizations")
        made: list[str] = []
        for _ in range(count):
            n = sum(len(a) for a in self.accounts.values()) + len(made)
            status = org.create_account(Email=f"member{n}@example.com", AccountName=f"m{n}")
            account = str(status["CreateAccountStatus"]["AccountId"])
            if ou is not None:
                org.move_account(
                    AccountId=account, SourceParentId=self.root, DestinationParentId=self.ous[ou]
                )
            made.append(account)
        self.accounts.setdefault(ou or "", []).extend(made)
        return made

    def add_vpc(self, account: str, region: str, tags: dict[str, str] | None = None) -> str:
        """A VPC in the account and region, tagged; its id."""
        ec2 = self.client("ec2", account, region)
        spec: dict[str, Any] = {"CidrBlock": "10.0.0.0/16"}
        if tags:
            spec["TagSpecifications"] = [
                {"ResourceType": "vpc", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ]
        return str(ec2.create_vpc(**spec)["Vpc"]["VpcId"])

    def delete_vpc(self, account: str, region: str, vpc_id: str) -> None:
        """Delete a VPC (its flow logs first, as AWS needs no such thing but moto keeps them)."""
        ec2 = self.client("ec2", account, region)
        logs = ec2.describe_flow_logs(Filters=[{"Name": "resource-id", "Values": [vpc_id]}])
        ids = [f["FlowLogId"] for f in logs.get("FlowLogs", [])]
        if ids:
            ec2.delete_flow_logs(FlowLogIds=ids)
        ec2.delete_vpc(VpcId=vpc_id)

    def add_vpcs(
        self,
        accounts: Sequence[str],
        regions: Sequence[str],
        per: int,
        tags: dict[str, str] | None = None,
    ) -> dict[tuple[str, str], list[str]]:
        """`per` tagged VPCs in every account and region; their ids by (account, region)."""
        return {
            (a, r): [self.add_vpc(a, r, tags) for _ in range(per)]
            for a in accounts
            for r in regions
        }

    def flow_logs(self, account: str, region: str) -> list[dict[str, Any]]:
        """The account and region's flow logs as DescribeFlowLogs lists them."""
        found: list[dict[str, Any]] = self.client("ec2", account, region).describe_flow_logs()[
            "FlowLogs"
        ]
        return found
