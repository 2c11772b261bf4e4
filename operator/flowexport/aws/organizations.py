"""AWS Organizations: the accounts under OUs, walked as the API pages them.

ListAccountsForParent gives a parent's direct accounts (for the root: those in no OU) and
ListOrganizationalUnitsForParent its child OUs; both page with `NextToken`, and a page may be
empty yet carry a token, so each loops until the token is null. MaxResults is at most 20.
Only the management account (or a delegated administrator) may make these calls; a member
gets AccessDenied (AWSAccessDenied), and throttling (`TooManyRequestsException`) is
AWSThrottled, retried at the next refresh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flowexport.aws.errors import call

#: The largest page the Organizations list calls take.
PAGE_SIZE = 20
#: The deepest OU nesting Organizations allows is 5 below the root; a cycle cannot happen, but
#: a bound keeps a misbehaving endpoint from walking for ever.
MAX_DEPTH = 10
#: Accounts that can be used (SUSPENDED and PENDING_CLOSURE ones cannot be assumed into).
USABLE = frozenset({"ACTIVE"})


@dataclass
class Walk:
    """What a walk found: accounts (id -> the OU or root they sit in), skipped accounts
    (id -> status) and the number of calls it made."""

    accounts: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    calls: int = 0


def _pages(
    fn: Callable[..., dict[str, Any]], operation: str, key: str, walk: Walk, **kw: Any
) -> Iterator[dict[str, Any]]:
    """Every item of a paged Organizations list call (until NextToken is null)."""
    token: str | None = None
    while True:
        args = {**kw, "MaxResults": PAGE_SIZE, **({"NextToken": token} if token else {})}
        walk.calls += 1
        page = call("organizations", operation, fn, **args)
        yield from page.get(key) or []
        token = page.get("NextToken")
        if not token:
            return


def walk_accounts(client: Any, parents: list[str], recursive: bool = True) -> Walk:
    """The accounts under `parents` (OU or root ids), with every child OU's when `recursive`.

    Raises AwsError (classified) on the first failing call: a partial walk would make the
    set delete the FlowExports of accounts it merely did not see.
    """
    walk = Walk()
    seen: set[str] = set()
    level = [(p, 0) for p in dict.fromkeys(parents)]
    while level:
        parent, depth = level.pop(0)
        if parent in seen:
            continue
        seen.add(parent)
        for account in _pages(
            client.list_accounts_for_parent,
            "ListAccountsForParent",
            "Accounts",
            walk,
            ParentId=parent,
        ):
            status = str(account.get("Status", "ACTIVE"))
            if status in USABLE:
                walk.accounts.setdefault(str(account["Id"]), parent)
            else:
                walk.skipped[str(account["Id"])] = status
        if recursive and depth < MAX_DEPTH:
            for unit in _pages(
                client.list_organizational_units_for_parent,
                "ListOrganizationalUnitsForParent",
                "OrganizationalUnits",
                walk,
                ParentId=parent,
            ):
                level.append((str(unit["Id"]), depth + 1))
    return walk
