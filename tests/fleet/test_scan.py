"""A FlowExportSet's discovery against an organisation in moto: accounts from a list and from
OUs, only granted ones called, per-account failures isolated, calls counted, and the
s3 guardrail (Ensure creates flow logs into a central bucket of another account; Report
changes nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flowexport.api.sets import FlowExportSetSpec
from flowexport.aws.discovery import SET_OWNER_TAG
from flowexport.aws.session import AwsKeys, AwsTarget
from flowexport.errors import Reason
from flowexport.fleet.plan import Place, coverage
from flowexport.fleet.scan import Access, NotGrantedError, Resolve, discover, remove_set_flow_logs
from flowexport.sim.awsfaults import AWSFaultProxy, FaultRule
from flowexport.sim.fleet import KEYS, MANAGEMENT, MotoFleet, role_arn
from flowexport.sim.serve import ServerThread
from tests.moto_server import reset

REGIONS = ["us-east-1", "eu-west-1"]
TAGS = {"flowexport": "on"}
PCE = {"url": "https://pce.example.com", "orgId": 1, "credentialsSecretRef": {"name": "k"}}
#: moto takes everything after `arn:aws:s3:::` as the bucket's name, so a flow log into
#: `bucket/prefix` finds no bucket there: the moto tests use no prefix (AWS takes one).
BUCKET = "log-archive-central"


@pytest.fixture
def fleet(moto_url: str) -> MotoFleet:
    reset(moto_url)
    made = MotoFleet(moto_url)
    made.organise()
    made.add_ou("workloads")
    made.add_ou("prod", parent="workloads")
    made.add_accounts("prod", 2)
    made.add_accounts("workloads", 1)
    made.add_accounts(None, 1)  # listed by id, not under the OU
    made.add_vpcs(made.members, REGIONS, 2, TAGS)
    # the central bucket lives in the management account (the log archive, here)
    made.client("s3").create_bucket(Bucket=BUCKET)
    return made


def grants(*accounts: str) -> Resolve:
    def resolve(account: str, region: str | None) -> Access:
        if account not in accounts:
            raise NotGrantedError(f"account {account} is not granted")
        role = None if account == MANAGEMENT else role_arn(account)
        return Access(account, role, "external-id", f"grant-{account}")

    return resolve


def spec_of(fleet: MotoFleet, **fields: Any) -> FlowExportSetSpec:
    body: dict[str, Any] = {
        "accounts": fleet.accounts[""],
        "organization": {
            "managementAccountId": MANAGEMENT,
            "organizationalUnits": [fleet.ous["workloads"]],
        },
        "regions": REGIONS,
        "vpcs": {"tags": TAGS},
        "template": {"pce": PCE},
    }
    body.update(fields)
    return FlowExportSetSpec.model_validate(body)


def base(url: str) -> AwsTarget:
    """The operator's own identity (the management account's keys, in moto)."""
    return AwsTarget("us-east-1", url, keys=AwsKeys(KEYS["aws_access_key_id"], "fleet"))


def test_every_granted_account_and_region_is_read_in_two_calls(fleet: MotoFleet) -> None:
    spec = spec_of(fleet)
    found = discover(spec, "security/fleet", base(fleet.url), grants(MANAGEMENT, *fleet.members))
    assert sorted(found.accounts) == fleet.members
    assert found.refused == [] and found.complete
    assert all(s.ok for s in found.scans) and len(found.scans) == 4 * 2
    for scan in found.scans:
        assert len(scan.vpcs) == 2  # the tagged ones, not moto's default VPC
    for account in fleet.members:
        assert found.calls[account] == 2 * len(REGIONS)  # DescribeVpcs + DescribeFlowLogs
    # the walk: workloads and prod, one page of accounts and one of OUs each
    assert found.calls[MANAGEMENT] == 4
    cover = coverage(spec, found.accounts, found.refused, found.scans)
    assert (cover.vpcs_total, cover.vpcs_with_flow_log) == (16, 0)


def test_an_ungranted_account_is_refused_and_never_called(fleet: MotoFleet) -> None:
    spec = spec_of(fleet)
    outsider = fleet.accounts["prod"][0]
    allowed = [a for a in fleet.members if a != outsider]
    found = discover(spec, "security/fleet", base(fleet.url), grants(MANAGEMENT, *allowed))
    assert [r.account_id for r in found.refused] == [outsider]
    assert found.refused[0].reason == Reason.ACCOUNT_NOT_GRANTED
    assert outsider in found.accounts and found.calls[outsider] == 0
    assert {s.place.account_id for s in found.scans} == set(allowed)


def test_an_ungranted_management_account_leaves_the_scope_incomplete(fleet: MotoFleet) -> None:
    spec = spec_of(fleet)
    found = discover(spec, "security/fleet", base(fleet.url), grants(*fleet.members))
    assert not found.complete
    assert [r.account_id for r in found.refused] == [MANAGEMENT]
    assert found.accounts == fleet.accounts[""]  # the listed account is still read
    assert found.calls[MANAGEMENT] == 0


@pytest.fixture
def proxied(fleet: MotoFleet) -> Iterator[tuple[AWSFaultProxy, str]]:
    faults = AWSFaultProxy(fleet.url)
    with ServerThread(faults.app) as url:
        yield faults, url


def test_a_failing_account_is_reported_and_stops_no_other(
    fleet: MotoFleet, proxied: tuple[AWSFaultProxy, str]
) -> None:
    faults, url = proxied
    spec = spec_of(fleet)
    # the first AssumeRole is denied (one worker: the first account's), and every
    # Organizations list call is throttled
    faults.set_faults(
        [
            FaultRule(
                service="sts", operation="AssumeRole", code="AccessDenied", status=403, remaining=1
            ),
            FaultRule(service="organizations", code="TooManyRequestsException", remaining=None),
        ]
    )
    found = discover(
        spec, "security/fleet", base(url), grants(MANAGEMENT, *fleet.members), workers=1
    )
    (refusal,) = found.refused
    assert refusal.account_id == MANAGEMENT and refusal.reason == Reason.AWS_THROTTLED
    listed = fleet.accounts[""][0]
    failed = [s for s in found.scans if not s.ok]
    assert [s.place for s in failed] == [Place(listed, "us-east-1")]
    assert failed[0].reason == Reason.AWS_ASSUME_ROLE_DENIED
    assert [s.place for s in found.scans if s.ok] == [Place(listed, "eu-west-1")]


def test_ensure_creates_flow_logs_into_a_central_bucket_of_another_account(
    fleet: MotoFleet,
) -> None:
    spec = spec_of(
        fleet,
        flowLogs="Ensure",
        destination={"s3": {"bucket": BUCKET}},
        accounts=[],
    )
    resolve = grants(MANAGEMENT, *fleet.members)
    found = discover(spec, "security/fleet", base(fleet.url), resolve)
    under_ou = fleet.accounts["prod"] + fleet.accounts["workloads"]
    assert found.flow_logs_created == len(under_ou) * len(REGIONS) * 2
    cover = coverage(spec, found.accounts, found.refused, found.scans)
    assert cover.vpcs_without_flow_log == 0 and cover.vpcs_total == 12
    account = under_ou[0]
    made = fleet.flow_logs(account, "eu-west-1")
    assert {f["LogDestination"] for f in made} == {f"arn:aws:s3:::{BUCKET}"}
    assert all({"Key": SET_OWNER_TAG, "Value": "security/fleet"} in f["Tags"] for f in made)
    # the next refresh finds them and creates nothing: AWS calls stay two per region
    again = discover(spec, "security/fleet", base(fleet.url), resolve)
    assert again.flow_logs_created == 0 and again.calls[account] == 2 * len(REGIONS)
    # and deleting the set's flow logs takes exactly those
    assert remove_set_flow_logs(spec, "security/fleet", base(fleet.url), resolve) == 12
    assert fleet.flow_logs(account, "eu-west-1") == []


def test_report_creates_nothing_and_reports_every_vpc_missing(fleet: MotoFleet) -> None:
    spec = spec_of(fleet, destination={"s3": {"bucket": BUCKET}})
    found = discover(spec, "security/fleet", base(fleet.url), grants(MANAGEMENT, *fleet.members))
    assert found.flow_logs_created == 0
    assert all(fleet.flow_logs(a, r) == [] for a in fleet.members for r in REGIONS)
    cover = coverage(spec, found.accounts, found.refused, found.scans)
    assert cover.vpcs_without_flow_log == cover.vpcs_total == 16
