"""What a FlowExportSet wants from what discovery found: names, selection, the FlowExports
wanted, the diff against those there, coverage."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowexport.api.models import FlowExportSpec
from flowexport.api.sets import (
    ACCOUNT_LABEL,
    MAX_MISSING,
    REGION_LABEL,
    SET_LABEL,
    VPC_LABEL,
    FlowExportSetSpec,
)
from flowexport.aws.discovery import FlowLog, FoundVpc
from flowexport.fleet.plan import (
    MAX_NAME,
    Existing,
    Place,
    Refusal,
    Scanned,
    coverage,
    covered,
    desired,
    diff,
    flowexport_name,
    kept_back,
)

A, B = "111111111111", "222222222222"
PCE = {"url": "https://pce.example.com", "orgId": 1, "credentialsSecretRef": {"name": "k"}}
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def set_spec(**fields: Any) -> FlowExportSetSpec:
    body: dict[str, Any] = {
        "accounts": [A, B],
        "regions": ["us-east-1", "eu-west-1"],
        "template": {"pce": PCE},
    }
    body.update(fields)
    return FlowExportSetSpec.model_validate(body)


def cwl(vpc: str, group: str, fid: str = "fl-1") -> FlowLog:
    return FlowLog(fid, vpc, "cloud-watch-logs", log_group=group)


def to_bucket(vpc: str, destination: str, fid: str = "fl-2") -> FlowLog:
    return FlowLog(fid, vpc, "s3", destination=destination)


def vpc(vpc_id: str, *flow_logs: FlowLog, **tags: str) -> FoundVpc:
    return FoundVpc(vpc_id, tuple(sorted(tags.items())), tuple(flow_logs))


# -- names ----------------------------------------------------------------------------------


_set_names = st.from_regex(r"^[a-z0-9]([-a-z0-9.]{0,60}[a-z0-9])?$", fullmatch=True)
_accounts = st.from_regex(r"^[0-9]{12}$", fullmatch=True)
_regions = st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1"])
_vpcs = st.from_regex(r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$", fullmatch=True)


@given(_set_names, _accounts, _regions, _vpcs)
def test_a_name_is_a_dns_label_of_at_most_63_characters_and_always_the_same(
    set_name: str, account: str, region: str, vpc_id: str
) -> None:
    name = flowexport_name(set_name, account, region, vpc_id)
    assert len(name) <= MAX_NAME and _LABEL.match(name), name
    assert name == flowexport_name(set_name, account, region, vpc_id)


@given(_set_names, _accounts, _regions, _vpcs, _vpcs)
def test_two_vpcs_never_share_a_name(
    set_name: str, account: str, region: str, one: str, other: str
) -> None:
    if one != other:
        assert flowexport_name(set_name, account, region, one) != flowexport_name(
            set_name, account, region, other
        )


def test_a_short_name_is_readable_and_a_long_one_keeps_its_head() -> None:
    assert flowexport_name("prod", A, "us-east-1", "vpc-0a1b2c3d") == (
        f"prod-{A}-us-east-1-vpc-0a1b2c3d"
    )
    long = flowexport_name("payments-platform", A, "ap-southeast-2", "vpc-0123456789abcdef0")
    assert long.startswith(f"payments-platform-{A}-ap-southeast-2-") and len(long) == 63


# -- selection and coverage -------------------------------------------------------------------


def test_covered_means_a_flow_log_to_the_destination() -> None:
    groups = set_spec()
    bucket = set_spec(destination={"s3": {"bucket": "central", "prefix": "org"}})
    into_group = vpc("vpc-00000001", cwl("vpc-00000001", "/x"))
    into_bucket = vpc("vpc-00000002", to_bucket("vpc-00000002", "arn:aws:s3:::central/org"))
    other_bucket = vpc("vpc-00000003", to_bucket("vpc-00000003", "arn:aws:s3:::other"))
    assert covered(groups, into_group) and not covered(groups, into_bucket)
    assert covered(bucket, into_bucket) and not covered(bucket, into_group)
    assert not covered(bucket, other_bucket) and not covered(bucket, vpc("vpc-00000004"))
    # no prefix asked: any prefix of the bucket will do
    anywhere = set_spec(destination={"s3": {"bucket": "central"}})
    assert covered(anywhere, into_bucket)


def scans() -> list[Scanned]:
    return [
        Scanned(
            Place(A, "us-east-1"),
            (
                vpc("vpc-000000a1", cwl("vpc-000000a1", "/legacy/a1"), env="prod"),
                vpc("vpc-000000a2", env="prod"),
                vpc("vpc-000000a3", env="dev"),
            ),
        ),
        Scanned(Place(A, "eu-west-1"), (vpc("vpc-000000a4", env="prod"),)),
        Scanned(Place(B, "us-east-1"), reason="AWSAssumeRoleDenied", message="denied"),
        Scanned(Place(B, "eu-west-1"), reason="AWSThrottled", message="slow down"),
    ]


def test_ensure_wants_a_flowexport_for_every_selected_vpc_of_what_was_read() -> None:
    spec = set_spec(
        flowLogs="Ensure",
        vpcs={"tags": {"env": "prod"}},
        destination={"logGroups": {"namePrefix": "/fx/", "deliverLogsRoleName": "delivery"}},
    )
    extra = {Place(A, r): {"accountId": A} for r in spec.regions}
    wanted = desired(spec, "fleet", scans(), extra)
    assert sorted(w.vpc_id for w in wanted.values()) == [
        "vpc-000000a1",
        "vpc-000000a2",
        "vpc-000000a4",
    ]
    by_vpc = {w.vpc_id: w for w in wanted.values()}
    adopted, created = by_vpc["vpc-000000a1"].spec["aws"], by_vpc["vpc-000000a2"].spec["aws"]
    assert adopted["logGroupName"] == "/legacy/a1"  # the existing flow log's group, adopted
    assert created["logGroupName"] == "/fx/vpc-000000a2"
    assert created["managementPolicy"] == "AdoptOrCreate"
    assert created["deliverLogsRoleArn"] == f"arn:aws:iam::{A}:role/delivery"
    assert created["accountId"] == A and "roleArn" not in created
    one = by_vpc["vpc-000000a4"]
    assert one.labels == {
        SET_LABEL: "fleet",
        ACCOUNT_LABEL: A,
        REGION_LABEL: "eu-west-1",
        VPC_LABEL: "vpc-000000a4",
    }
    assert one.name == flowexport_name("fleet", A, "eu-west-1", "vpc-000000a4")
    for w in wanted.values():
        FlowExportSpec.model_validate(w.spec)  # every generated spec is valid


def test_report_wants_only_vpcs_with_a_flow_log_and_changes_nothing() -> None:
    spec = set_spec(flowLogs="Report")
    wanted = desired(spec, "fleet", scans())
    assert [w.vpc_id for w in wanted.values()] == ["vpc-000000a1"]
    (only,) = wanted.values()
    assert only.spec["aws"]["managementPolicy"] == "Observe"
    assert "deliverLogsRoleArn" not in only.spec["aws"]


def test_an_s3_destination_generates_no_flowexports() -> None:
    spec = set_spec(flowLogs="Ensure", destination={"s3": {"bucket": "central"}})
    assert desired(spec, "fleet", scans()) == {}


def test_the_template_reaches_every_generated_spec() -> None:
    spec = set_spec(
        flowLogs="Ensure",
        template={
            "pce": PCE,
            "workloads": {"mode": "Sync", "labels": {"env": "prod"}},
            "ingestion": {"pollIntervalSeconds": 5},
            "aws": {"endpointUrl": "https://vpce.example.com", "tags": {"team": "sec"}},
        },
        deletionPolicy="Retain",
    )
    for want in desired(spec, "fleet", scans()).values():
        parsed = FlowExportSpec.model_validate(want.spec)
        assert parsed.workloads.mode == "Sync" and parsed.workloads.labels == {"env": "prod"}
        assert parsed.ingestion.poll_interval_seconds == 5
        assert parsed.aws.endpoint_url == "https://vpce.example.com"
        assert parsed.aws.tags == {"team": "sec"} and parsed.deletion_policy == "Retain"
        assert parsed.aws.vpc_id == want.vpc_id and parsed.aws.region == want.place.region


def test_coverage_counts_lists_the_first_missing_sorted_and_reports_refusals() -> None:
    spec = set_spec()
    refusal = Refusal("333333333333", "AccountNotGranted", "no grant")
    cover = coverage(spec, [A, B], [refusal], scans())
    assert (cover.accounts_total, cover.accounts_granted) == (3, 2)
    assert (cover.accounts_refused, cover.accounts_failed) == (1, 1)
    assert (cover.vpcs_total, cover.vpcs_with_flow_log, cover.vpcs_without_flow_log) == (4, 1, 3)
    assert cover.missing == [
        (A, "eu-west-1", "vpc-000000a4"),
        (A, "us-east-1", "vpc-000000a2"),
        (A, "us-east-1", "vpc-000000a3"),
    ]
    status = cover.to_status()
    assert status["vpcs"] == {"total": 4, "withFlowLog": 1, "withoutFlowLog": 3}
    assert [f["region"] for f in status["failedAccounts"]] == ["eu-west-1", "us-east-1"]
    assert status["refusedAccounts"] == [
        {"accountId": "333333333333", "reason": "AccountNotGranted", "message": "no grant"}
    ]


@given(st.lists(st.tuples(_accounts, _regions, _vpcs, st.booleans()), max_size=120))
def test_missing_is_the_first_fifty_without_a_flow_log_sorted(
    found: list[tuple[str, str, str, bool]],
) -> None:
    places: dict[Place, list[FoundVpc]] = {}
    for account, region, vpc_id, has in found:
        logs = (cwl(vpc_id, "/g"),) if has else ()
        places.setdefault(Place(account, region), []).append(vpc(vpc_id, *logs))
    scanned = [Scanned(p, tuple(v)) for p, v in places.items()]
    cover = coverage(set_spec(), {p.account_id for p in places}, [], scanned)
    expected = sorted(
        (p.account_id, p.region, v.vpc_id)
        for p, vs in places.items()
        for v in vs
        if not v.flow_logs
    )
    assert cover.missing == expected
    assert cover.to_status()["missing"] == [
        {"accountId": a, "region": r, "vpcId": v} for a, r, v in expected[:MAX_MISSING]
    ]
    assert cover.vpcs_total == len(found)


# -- the diff -------------------------------------------------------------------------------


def existing_of(spec: FlowExportSetSpec, scanned: list[Scanned]) -> list[Existing]:
    return [Existing(w.name, w.labels, w.spec) for w in desired(spec, "fleet", scanned).values()]


def test_nothing_to_do_when_what_is_there_is_what_is_wanted() -> None:
    spec = set_spec(flowLogs="Ensure")
    wanted = desired(spec, "fleet", scans())
    assert diff(wanted, existing_of(spec, scans()), set(), 500).empty


def test_defaults_filled_in_by_the_api_server_are_no_difference() -> None:
    spec = set_spec(flowLogs="Ensure")
    wanted = desired(spec, "fleet", scans())
    stored = [
        Existing(
            e.name,
            e.labels,
            FlowExportSpec.model_validate(e.spec).model_dump(by_alias=True, mode="json"),
        )
        for e in existing_of(spec, scans())
    ]
    assert diff(wanted, stored, set(), 500).empty


def test_a_template_change_updates_and_a_vpc_gone_deletes_but_not_where_unread() -> None:
    spec = set_spec(flowLogs="Ensure")
    before = existing_of(spec, scans())
    b_thing = Existing(
        flowexport_name("fleet", B, "us-east-1", "vpc-000000b1"),
        {SET_LABEL: "fleet", ACCOUNT_LABEL: B, REGION_LABEL: "us-east-1"},
        before[0].spec,
    )
    changed = set_spec(flowLogs="Ensure", deletionPolicy="Retain")
    later = scans()
    later[0] = Scanned(later[0].place, later[0].vpcs[:2])  # vpc-000000a3 is gone
    wanted = desired(changed, "fleet", later)
    unread = kept_back([*before, b_thing], later, [A, B], spec.regions, complete=True)
    assert unread == {Place(B, "us-east-1")}
    out = diff(wanted, [*before, b_thing], unread, 500)
    assert {w.vpc_id for w in out.update} == {"vpc-000000a1", "vpc-000000a2", "vpc-000000a4"}
    assert out.delete == [flowexport_name("fleet", A, "us-east-1", "vpc-000000a3")]
    assert out.create == []


def test_an_account_out_of_scope_loses_its_flowexports_unless_the_scope_is_unknown() -> None:
    spec = set_spec(flowLogs="Ensure")
    there = existing_of(spec, scans())
    only_b = [Scanned(Place(B, r), ()) for r in spec.regions]
    assert kept_back(there, only_b, [B], spec.regions, complete=True) == set()
    assert len(diff({}, there, set(), 500).delete) == len(there)
    # the Organizations walk failed: A may still be in scope, so its FlowExports stay
    kept = kept_back(there, only_b, [B], spec.regions, complete=False)
    assert diff({}, there, kept, 500).delete == []


@pytest.mark.parametrize("cap", [0, 1, 2, 3, 10])
def test_the_cap_holds_creations_and_keeps_what_is_there(cap: int) -> None:
    spec = set_spec(flowLogs="Ensure")
    wanted = desired(spec, "fleet", scans())
    there = [e for e in existing_of(spec, scans())][:1]
    out = diff(wanted, there, set(), cap)
    assert len(out.create) == max(0, min(len(wanted) - 1, cap - 1))
    assert out.capped == len(wanted) - 1 - len(out.create)
    assert out.delete == []


@given(
    st.sets(st.integers(0, 30), max_size=20),
    st.sets(st.integers(0, 30), max_size=20),
    st.integers(0, 40),
)
def test_after_the_diff_is_applied_what_is_there_is_what_is_wanted_within_the_cap(
    wanted_ids: set[int], there_ids: set[int], cap: int
) -> None:
    spec = set_spec(flowLogs="Ensure")

    def place_of(ids: set[int]) -> Scanned:
        return Scanned(Place(A, "us-east-1"), tuple(vpc(f"vpc-{i:08x}") for i in sorted(ids)))

    wanted = desired(spec, "fleet", [place_of(wanted_ids)])
    there = existing_of(spec, [place_of(there_ids)])
    out = diff(wanted, there, set(), cap)
    after = ({e.name for e in there} - set(out.delete)) | {w.name for w in out.create}
    assert after <= set(wanted)
    assert len(after) == min(len(wanted), max(cap, len(set(wanted) & {e.name for e in there})))
