"""The Organizations walk against moto in server mode: nested OUs, paging past 20 accounts,
throttling through the fault proxy; and the empty-page-with-token rule AWS documents."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flowexport.aws.errors import AwsError
from flowexport.aws.organizations import PAGE_SIZE, walk_accounts
from flowexport.errors import Reason
from flowexport.sim.awsfaults import AWSFaultProxy, FaultRule
from flowexport.sim.fleet import MANAGEMENT, MotoFleet
from flowexport.sim.serve import ServerThread
from tests.moto_server import reset


@pytest.fixture
def fleet(moto_url: str) -> MotoFleet:
    reset(moto_url)
    made = MotoFleet(moto_url)
    made.organise()
    made.add_ou("prod")
    made.add_ou("payments", parent="prod")
    made.add_ou("cards", parent="payments")
    made.add_ou("sandbox")
    made.add_accounts("prod", 2)
    made.add_accounts("payments", 23)  # more than a page
    made.add_accounts("cards", 1)
    made.add_accounts("sandbox", 2)
    made.add_accounts(None, 1)  # in the root itself
    return made


def test_a_recursive_walk_finds_every_account_below_at_any_depth(fleet: MotoFleet) -> None:
    walk = walk_accounts(fleet.client("organizations"), [fleet.ous["prod"]])
    expected = fleet.accounts["prod"] + fleet.accounts["payments"] + fleet.accounts["cards"]
    assert sorted(walk.accounts) == sorted(expected)
    assert walk.accounts[fleet.accounts["cards"][0]] == fleet.ous["cards"]
    # prod, payments (2 pages of accounts), cards: an account page and an OU page each
    assert walk.calls == 3 * 2 + 1


def test_a_flat_walk_takes_only_the_direct_accounts(fleet: MotoFleet) -> None:
    walk = walk_accounts(fleet.client("organizations"), [fleet.ous["prod"]], recursive=False)
    assert sorted(walk.accounts) == sorted(fleet.accounts["prod"])


def test_the_root_walk_is_the_whole_organisation(fleet: MotoFleet) -> None:
    walk = walk_accounts(fleet.client("organizations"), [fleet.root, fleet.ous["sandbox"]])
    assert sorted(walk.accounts) == sorted([*fleet.members, MANAGEMENT])


@pytest.fixture
def proxy(fleet: MotoFleet) -> Iterator[tuple[AWSFaultProxy, MotoFleet]]:
    faults = AWSFaultProxy(fleet.url)
    with ServerThread(faults.app) as url:
        yield faults, MotoFleet(url, fleet.root, fleet.ous, fleet.accounts)


def test_throttling_is_a_retryable_error_not_a_partial_walk(
    proxy: tuple[AWSFaultProxy, MotoFleet],
) -> None:
    faults, fleet = proxy
    faults.set_faults(
        [
            FaultRule(
                service="organizations",
                operation="ListAccountsForParent",
                code="TooManyRequestsException",
                remaining=None,
            )
        ]
    )
    client = fleet.client("organizations")
    client.meta.events.register("needs-retry.*", lambda **_: None)  # no botocore retries
    with pytest.raises(AwsError) as caught:
        walk_accounts(client, [fleet.ous["prod"]])
    assert caught.value.reason is Reason.AWS_THROTTLED and caught.value.retryable
    assert any(h.injected for h in faults.hits)


class PagedOrganizations:
    """Organizations as AWS documents its paging and moto never answers it: pages that are
    empty but carry a token. A test double of the two list calls, nothing else."""

    def __init__(self, pages: list[list[str]]) -> None:
        self.pages = pages
        self.asked: list[dict[str, Any]] = []

    def list_accounts_for_parent(self, **kw: Any) -> dict[str, Any]:
        self.asked.append(kw)
        assert kw["MaxResults"] <= PAGE_SIZE
        index = int(kw.get("NextToken", "0"))
        page: dict[str, Any] = {
            "Accounts": [{"Id": a, "Status": "ACTIVE"} for a in self.pages[index]]
        }
        if index + 1 < len(self.pages):
            page["NextToken"] = str(index + 1)
        return page

    def list_organizational_units_for_parent(self, **kw: Any) -> dict[str, Any]:
        return {"OrganizationalUnits": []}


def test_empty_pages_with_a_token_are_followed_to_the_end() -> None:
    client = PagedOrganizations([[], ["111111111111"], [], [], ["222222222222"], []])
    walk = walk_accounts(client, ["ou-abcd-12345678"])
    assert sorted(walk.accounts) == ["111111111111", "222222222222"]
    assert len(client.asked) == 6


def test_suspended_accounts_are_skipped_and_said() -> None:
    client = PagedOrganizations([["111111111111"]])
    original = client.list_accounts_for_parent

    def with_suspended(**kw: Any) -> dict[str, Any]:
        page = original(**kw)
        page["Accounts"].append({"Id": "333333333333", "Status": "SUSPENDED"})
        return page

    client.list_accounts_for_parent = with_suspended  # type: ignore[method-assign]
    walk = walk_accounts(client, ["r-abcd"])
    assert list(walk.accounts) == ["111111111111"] and walk.skipped == {"333333333333": "SUSPENDED"}
