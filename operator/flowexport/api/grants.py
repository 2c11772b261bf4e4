"""The AccountGrant API (flowexport.io/v1alpha1, cluster-scoped): which namespaces may use
which AWS account, through which role, with which ExternalId.

A cluster admin's resource, like ACK's IAMRoleSelector and Crossplane's ProviderConfig: the
FlowExport author names an account (`spec.aws.accountId`, or `roleArn`'s account); the
operator, when it enforces grants, assumes only a role an AccountGrant grants to the
FlowExport's namespace, and sends the grant's ExternalId and a session name naming the
FlowExport. Everything here is pure: `resolve` decides from the grants and the namespace's
labels, and the operator (`kube/grants.py`) keeps those current.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from flowexport.api.models import (
    _ACCOUNT_ID,
    _IAM_ROLE_ARN,
    ApiModel,
    Condition,
    _cel,
    _rules,
)
from flowexport.errors import ConfigError, Reason

KIND = "AccountGrant"
PLURAL = "accountgrants"
SINGULAR = "accountgrant"
SHORT_NAMES = ["fxgrant"]

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_REGION = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"
_LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
#: STS's ExternalId: 2 to 1224 characters of [\w+=,.@:/-].
_EXTERNAL_ID = r"^[A-Za-z0-9_+=,.@:/-]+$"

LabelKey = Annotated[str, Field(max_length=316, pattern=_LABEL_KEY)]
LabelValue = Annotated[str, Field(max_length=63, pattern=_LABEL_VALUE)]


class LabelSelectorRequirement(ApiModel):
    """One expression of a label selector (metav1.LabelSelectorRequirement)."""

    key: LabelKey = Field(description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[LabelValue] = Field(
        default_factory=list,
        description="The values for In and NotIn (empty for Exists and DoesNotExist).",
        max_length=64,
    )

    @model_validator(mode="after")
    def _values_fit(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(ApiModel):
    """A label selector (metav1.LabelSelector); an empty one selects every namespace."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict, description="Labels the namespace must have, with these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list,
        description="Expressions the namespace's labels must satisfy.",
        max_length=32,
    )

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` satisfy the selector (Kubernetes' semantics)."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            value = labels.get(req.key)
            if req.operator == "In" and (not present or value not in req.values):
                return False
            if req.operator == "NotIn" and present and value in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


class GrantNamespaces(ApiModel):
    """The namespaces a grant covers: those named, and those the selector selects."""

    model_config = _rules(
        _cel(
            "(has(self.names) && size(self.names) > 0) || has(self.selector)",
            "name namespaces, or give a selector (an empty selector selects every namespace)",
        )
    )

    names: list[Annotated[str, Field(max_length=63, pattern=_DNS_LABEL)]] = Field(
        default_factory=list, description="Namespaces by name.", max_length=256
    )
    selector: LabelSelector | None = Field(
        default=None,
        description=(
            "Namespaces by their labels (e.g. matchLabels team: payments). Only the cluster "
            "admin should be able to label namespaces for this to be a boundary."
        ),
    )

    @model_validator(mode="after")
    def _some(self) -> GrantNamespaces:
        if not self.names and self.selector is None:
            raise ValueError(
                "name namespaces, or give a selector (an empty selector selects every namespace)"
            )
        return self

    def covers(self, namespace: str, labels: Mapping[str, str] | None) -> bool:
        """Whether the namespace is named, or its labels (None: unknown) match the selector."""
        if namespace in self.names:
            return True
        return self.selector is not None and labels is not None and self.selector.matches(labels)


class AccountGrantSpec(ApiModel):
    """An AWS account, the role and ExternalId that reach it, and who may use it."""

    model_config = _rules(
        _cel(
            "!has(self.roleArn) || self.roleArn.contains(':iam::' + self.accountId + ':role/')",
            "roleArn must be a role of accountId's account",
        )
    )

    account_id: str = Field(
        description="The AWS account (12 digits).", pattern=_ACCOUNT_ID, max_length=12
    )
    role_arn: str | None = Field(
        default=None,
        description=(
            "The role the operator assumes in the account (its trust policy trusts the "
            "operator's role, with the sts:ExternalId condition). Unset: the operator's own "
            "identity (IRSA), which must be of this account."
        ),
        pattern=_IAM_ROLE_ARN,
        max_length=2048,
    )
    external_id: str | None = Field(
        default=None,
        description=(
            "ExternalId sent with AssumeRole (2 to 1224 characters of [\\w+=,.@:/-]; not a "
            "secret: it tells this operator's uses of the role apart). Unset: none is sent."
        ),
        pattern=_EXTERNAL_ID,
        min_length=2,
        max_length=1224,
    )
    namespaces: GrantNamespaces = Field(description="The namespaces that may use the account.")
    session_names: Literal["FlowExport", "Namespace"] = Field(
        default="FlowExport",
        description=(
            "The AssumeRole session name: FlowExport (fx-<namespace>-<name>, each FlowExport "
            "its own session and AWS clients, about 2 MiB and one AssumeRole each) or "
            "Namespace (fx-<namespace>, shared by the namespace's FlowExports through this "
            "grant: for many FlowExports per namespace)."
        ),
    )
    regions: list[Annotated[str, Field(max_length=32, pattern=_REGION)]] = Field(
        default_factory=list,
        description="Regions the namespaces may work in (empty: every region).",
        max_length=64,
    )

    @model_validator(mode="after")
    def _role_in_account(self) -> AccountGrantSpec:
        if self.role_arn and self.role_arn.split(":")[4] != self.account_id:
            raise ValueError("roleArn must be a role of accountId's account")
        return self


class AccountGrantStatus(ApiModel):
    """What the operator saw of the grant."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the status is for."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready: the operator read the grant and uses it.",
        max_length=8,
    )
    flow_exports: int | None = Field(
        default=None,
        ge=0,
        description="FlowExports this operator replica runs through the grant.",
    )


class AccountGrant(ApiModel):
    """A whole AccountGrant object."""

    api_version: Literal["flowexport.io/v1alpha1"] = Field(
        default="flowexport.io/v1alpha1", description="APIVersion of this object."
    )
    kind: Literal["AccountGrant"] = Field(
        default="AccountGrant", description="Kind of this object."
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Object metadata.")
    spec: AccountGrantSpec
    status: AccountGrantStatus | None = None


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Account", "type": "string", "jsonPath": ".spec.accountId",
     "description": "The AWS account."},
    {"name": "Role", "type": "string", "jsonPath": ".spec.roleArn",
     "description": "The role assumed in it."},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the operator read the grant.",
    },
    {"name": "FlowExports", "type": "integer", "jsonPath": ".status.flowExports",
     "description": "FlowExports using it."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]  # fmt: skip


# -- what a FlowExport gets --------------------------------------------------------------------


@dataclass(frozen=True)
class AccountAccess:
    """How to reach an account for one FlowExport: the role to assume (None: the operator's
    own identity), the ExternalId to send, the grant that allowed it (None: no grant was
    needed, e.g. the namespace's own keys) and the session name (the grant's, with
    `sessionNames: Namespace`; else None, and the front end names the FlowExport)."""

    account_id: str
    role_arn: str | None
    external_id: str | None = None
    grant_name: str | None = None
    session_name: str | None = None


class AccountNotGrantedError(ConfigError):
    """The FlowExport names an account (or role, or region) no AccountGrant grants its
    namespace; no AWS call was made."""

    reason = Reason.ACCOUNT_NOT_GRANTED


#: RoleSessionName: 2 to 64 characters of [\w+=,.@-].
SESSION_NAME_MAX = 64
_SESSION_UNSAFE = re.compile(r"[^\w+=,.@-]", re.ASCII)


def session_name(namespace: str, name: str) -> str:
    """The AssumeRole session name of FlowExport namespace/name: `fx-<namespace>-<name>`,
    shown in the assumed-role ARN and the account's CloudTrail. Past 64 characters it is cut
    and ends in a hash of the whole, so two FlowExports never share one."""
    whole = _SESSION_UNSAFE.sub("-", f"fx-{namespace}-{name}")
    if len(whole) <= SESSION_NAME_MAX:
        return whole
    digest = hashlib.blake2b(f"{namespace}/{name}".encode(), digest_size=5).hexdigest()
    return f"{whole[: SESSION_NAME_MAX - len(digest) - 1]}-{digest}"


def namespace_session_name(namespace: str) -> str:
    """The session name shared by a namespace's FlowExports (`sessionNames: Namespace`):
    `fx-<namespace>`, by the same rule as `session_name`."""
    whole = _SESSION_UNSAFE.sub("-", f"fx-{namespace}")
    if len(whole) <= SESSION_NAME_MAX:
        return whole
    digest = hashlib.blake2b(namespace.encode(), digest_size=5).hexdigest()
    return f"{whole[: SESSION_NAME_MAX - len(digest) - 1]}-{digest}"


@dataclass(frozen=True)
class Grant:
    """One AccountGrant as the operator holds it: its name, generation and parsed spec."""

    name: str
    spec: AccountGrantSpec
    generation: int | None = None


def resolve(
    grants: Iterable[Grant],
    namespace: str,
    labels: Mapping[str, str] | None,
    account_id: str | None,
    region: str | None = None,
    role_arn: str | None = None,
) -> AccountAccess:
    """The access `namespace` (with `labels`; None: not known) has to `account_id` (None: the
    operator's own identity) in `region`, through the role `role_arn` if the FlowExport names
    one. Raises AccountNotGrantedError saying why when no grant allows it. Among several grants
    that fit, the first by name is used."""
    ordered = sorted(grants, key=lambda g: g.name)
    if account_id is None:
        candidates = [g for g in ordered if g.spec.role_arn is None]
        what = "the operator's own AWS identity"
        hint = "an AccountGrant without roleArn (accountId: the operator's account)"
    else:
        candidates = [g for g in ordered if g.spec.account_id == account_id]
        what = f"AWS account {account_id}"
        hint = f"an AccountGrant for account {account_id}"
    if not candidates:
        raise AccountNotGrantedError(
            f"no AccountGrant grants {what} (the cluster admin creates {hint} that names "
            f"namespace {namespace}); no AWS call was made"
        )
    covering = [g for g in candidates if g.spec.namespaces.covers(namespace, labels)]
    if not covering:
        names = ", ".join(g.name for g in candidates)
        raise AccountNotGrantedError(
            f"namespace {namespace} may not use {what}: AccountGrant {names} does not include "
            "it (by name or label selector); no AWS call was made"
        )
    if region is not None:
        in_region = [g for g in covering if not g.spec.regions or region in g.spec.regions]
        if not in_region:
            names = ", ".join(g.name for g in covering)
            raise AccountNotGrantedError(
                f"region {region} is not granted: AccountGrant {names} limits {what} to "
                f"other regions; no AWS call was made"
            )
        covering = in_region
    if role_arn is not None:
        same_role = [g for g in covering if g.spec.role_arn == role_arn]
        if not same_role:
            granted = ", ".join(f"{g.spec.role_arn} ({g.name})" for g in covering)
            raise AccountNotGrantedError(
                f"spec.aws.roleArn {role_arn} is not the role granted for {what}: {granted}; "
                "omit roleArn (accountId is enough) or name the granted role; no AWS call "
                "was made"
            )
        covering = same_role
    chosen = covering[0]
    shared = chosen.spec.session_names == "Namespace" and chosen.spec.role_arn is not None
    return AccountAccess(
        chosen.spec.account_id,
        chosen.spec.role_arn,
        chosen.spec.external_id,
        chosen.name,
        namespace_session_name(namespace) if shared else None,
    )


def parse_grant(body: Mapping[str, Any]) -> Grant:
    """An AccountGrant object (as the API returns it) into a `Grant`; raises
    pydantic.ValidationError for a spec the models refuse."""
    metadata = body.get("metadata") or {}
    spec = AccountGrantSpec.model_validate(body.get("spec") or {})
    return Grant(str(metadata.get("name") or ""), spec, metadata.get("generation"))
