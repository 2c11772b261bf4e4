"""The tags that say which FlowExport created an AWS resource (and so may change or delete it)."""

from __future__ import annotations

OWNER_TAG = "flowexport.io/owner"
MANAGED_BY_TAG = "flowexport.io/managed-by"
MANAGED_BY = "flowexport-operator"


def owner_tags(owner: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The tags of a resource created for FlowExport `owner` (namespace/name): the operator's
    own first (a tagging call cut short still says whose it is), then `extra` (the spec's
    `aws.tags`, which cannot name the operator's keys)."""
    own = {OWNER_TAG: owner, MANAGED_BY_TAG: MANAGED_BY}
    return {**own, **{k: v for k, v in (extra or {}).items() if k not in own}}
