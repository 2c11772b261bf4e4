"""How a front end hands Secret values to the lifecycle: one small interface, two sources.

The operator reads them through the Kubernetes API (`kube/secrets.py`); `flowexport sync`
from its manifest file and the environment (`manifest.py`). Values go straight to the AWS and
PCE clients; no message built from them carries one. The same source says how the FlowExport
may reach its AWS account (`account_access`): the operator from the AccountGrants, `sync` as
the user's own identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Protocol

from flowexport.api.grants import AccountAccess
from flowexport.api.models import AwsSpec
from flowexport.errors import ConfigError

#: The label by which a Secret's owner marks it for the operator, valued with a `SecretKind`
#: (the convention of Argo CD's `argocd.argoproj.io/secret-type`).
SECRET_TYPE_LABEL = "flowexport.io/secret-type"


class SecretKind(StrEnum):
    """What a Secret holds for a FlowExport (also the value of its `secret-type` label)."""

    PCE_CREDENTIALS = "pce-credentials"
    AWS_CREDENTIALS = "aws-credentials"
    CA_BUNDLE = "ca-bundle"

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys the operator reads from such a Secret."""
        return _KEYS[self]


_KEYS = {
    SecretKind.PCE_CREDENTIALS: ("username", "password"),
    SecretKind.AWS_CREDENTIALS: (
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
    ),
    SecretKind.CA_BUNDLE: ("ca.crt",),
}


class SecretSource(Protocol):
    """Where a front end finds the Secrets a FlowExport references."""

    async def read(self, name: str, kind: SecretKind) -> Mapping[str, str] | None:
        """The Secret's values, or None when it is not there."""
        ...

    def missing(self, name: str, kind: SecretKind) -> ConfigError | None:
        """The error for a Secret `read` did not find; None to go on without it (only for
        AWS credentials: the default credential chain is used then)."""
        ...

    async def account_access(self, aws: AwsSpec) -> AccountAccess | None:
        """How to reach the account `aws` names: the role to assume (if any), the ExternalId
        and the session name; None: no role is assumed (keys or the default chain as they
        are). Raises a FlowExportError (AccountNotGranted, AccountGrantsUnavailable) before
        any AWS call when the FlowExport may not use it."""
        ...
