"""The tags that say which FlowExport created an AWS resource, and what another may do with it.

A resource carrying `flowexport.io/owner: <namespace>/<name>` was created by that FlowExport,
which alone may change or delete it. Another FlowExport of the same namespace (the same
tenant) may read it as it is, never change it; a FlowExport of another namespace may neither
read nor change it (`check_foreign`). An untagged resource (a log group from before the
operator, the Lambda's) belongs to no FlowExport and is adopted as the spec says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from flowexport.aws.errors import AwsError
from flowexport.errors import Reason

OWNER_TAG = "flowexport.io/owner"
MANAGED_BY_TAG = "flowexport.io/managed-by"
MANAGED_BY = "flowexport-operator"


class Owner(str):
    """A FlowExport as AWS resources know it: the text `namespace/name` (the ownership tag's
    value, which every function taking an owner string gets) and its uid, which makes the
    names the operator picks unique (`unique_suffix`). Without a uid (a manifest that has
    none), the text itself stands in for it."""

    uid: str

    def __new__(cls, namespace: str, name: str, uid: str = "") -> Owner:
        made = super().__new__(cls, f"{namespace}/{name}")
        made.uid = uid
        return made

    def __reduce__(self) -> tuple[type[Owner], tuple[str, str, str]]:
        namespace, _, name = self.partition("/")
        return (Owner, (namespace, name, self.uid))


def owner_tags(owner: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The tags of a resource created for FlowExport `owner` (namespace/name): the operator's
    own first (a tagging call cut short still says whose it is), then `extra` (the spec's
    `aws.tags`, which cannot name the operator's keys)."""
    own = {OWNER_TAG: str(owner), MANAGED_BY_TAG: MANAGED_BY}
    return {**own, **{k: v for k, v in (extra or {}).items() if k not in own}}


def unique_suffix(owner: str) -> str:
    """10 hex characters of a hash of the FlowExport's uid (of `namespace/name` when it has
    none): what keeps the names the operator makes apart, whatever the names flatten to."""
    uid = owner.uid if isinstance(owner, Owner) and owner.uid else str(owner)
    return hashlib.blake2b(uid.encode(), digest_size=5).hexdigest()


def namespace_of(owner: str) -> str:
    """The namespace of `namespace/name`."""
    return owner.partition("/")[0]


def tagged_owner(tags: Mapping[str, str]) -> str | None:
    """The FlowExport (namespace/name) a resource's tags name as its creator, if any."""
    found = tags.get(OWNER_TAG)
    return found or None


def check_foreign(what: str, found: str | None, owner: str, *, changes: bool) -> None:
    """Refuse what FlowExport `owner` may not do with `what`, a resource whose ownership tag
    names `found`: read one of another namespace, or (`changes`) change one of another
    FlowExport. Raises AwsError OwnedByAnotherFlowExport; nothing for an untagged resource or
    one of `owner`'s own. The message names the other FlowExport only within its namespace."""
    if found is None or found == str(owner):
        return
    if namespace_of(found) != namespace_of(owner):
        raise AwsError(
            f"{what} belongs to a FlowExport in another namespace (its tag {OWNER_TAG}): a "
            "FlowExport never reads or changes another namespace's resources; name one of "
            "your own",
            Reason.OWNED_BY_ANOTHER,
        )
    if changes:
        raise AwsError(
            f"{what} belongs to FlowExport {found} (its tag {OWNER_TAG}): a FlowExport never "
            "changes another's resources; name one of your own, or make the change in that "
            "FlowExport",
            Reason.OWNED_BY_ANOTHER,
        )
