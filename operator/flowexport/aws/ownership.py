"""The tags that say which FlowExport created an AWS resource (and so may change or delete it)."""

from __future__ import annotations

OWNER_TAG = "flowexport.io/owner"
MANAGED_BY_TAG = "flowexport.io/managed-by"
MANAGED_BY = "flowexport-operator"


def owner_tags(owner: str) -> dict[str, str]:
    """The tags of a resource created for FlowExport `owner` (namespace/name)."""
    return {OWNER_TAG: owner, MANAGED_BY_TAG: MANAGED_BY}
