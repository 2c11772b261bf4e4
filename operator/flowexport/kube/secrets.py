"""The operator's `SecretSource`: Secrets read through the Kubernetes API, versions noted.

Each Secret read records its resourceVersion, so the resync timer notices when one changes
(or appears) and reconciles. Values go straight to the clients; no message carries one.

Whoever may create a FlowExport names the Secrets it uses, so the operator guards against
being a confused deputy: it uses only Secrets their owner labelled for it
(`flowexport.io/secret-type`, valued with the use), and releases PCE credentials (and the CA
bundle) only for a PCE host *and port* the operator's administrator allowed
(`flowexport run --allowed-pce-host`): none allowed, none released.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from flowexport.api.grants import AccountAccess, AccountNotGrantedError, session_name
from flowexport.api.models import AwsSpec
from flowexport.errors import ConfigError, FlowExportError, Reason
from flowexport.kube.client import KubeClient
from flowexport.kube.grants import GrantBook
from flowexport.secrets import SECRET_TYPE_LABEL, SecretKind
from flowexport.urls import host_port_text

#: A PCE endpoint as `urls.endpoint_of` gives it: (host, port).
Endpoint = tuple[str, int]

#: Fingerprint of each Secret read (`SecretRecord.fingerprint`; "" for one that did not exist),
#: and of each account decision (`GRANT_KEY` + account|region|roleArn: `GrantBook.fingerprint`).
Versions = dict[str, str]

#: The prefix of an account decision's entry in `Versions` (no Secret name has a colon).
GRANT_KEY = "accountgrant:"


class KubeSecrets:
    """Secrets of one namespace; `versions` holds what was read, for change detection.

    `pce` is the (host, port) the FlowExport sends its PCE credentials to; they are released
    only when it is one of `allowed` (empty: none is).
    """

    def __init__(
        self,
        api: KubeClient,
        namespace: str,
        versions: Versions | None = None,
        pce: Endpoint | None = None,
        allowed: frozenset[Endpoint] = frozenset(),
        name: str = "",
        grants: GrantBook | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.versions: Versions = {} if versions is None else versions
        self.pce = pce
        self.allowed = allowed
        #: The FlowExport's name (its AssumeRole session name is made of it).
        self.name = name
        #: The AccountGrants the operator enforces (None: `--account-grants Off`).
        self.grants = grants

    async def account_access(self, aws: AwsSpec) -> AccountAccess | None:
        """How the FlowExport reaches its account. With the namespace's own keys
        (credentialsSecretRef), or with grants Off, as the spec says (roleArn, if any, with
        the FlowExport's session name). Otherwise the operator's identity is lent only where
        an AccountGrant grants the namespace the account (accountId, roleArn's, or the
        operator's own), the region and the role: its role and ExternalId are used.
        Raises AccountNotGrantedError, AccountGrantsUnavailableError; never calls AWS."""
        session = session_name(self.namespace, self.name)
        keys = aws.credentials_secret_ref is not None
        if self.grants is None or keys:
            if aws.role_arn is None and aws.account_id is not None and not keys:
                raise AccountNotGrantedError(
                    f"spec.aws.accountId {aws.account_id} selects an AccountGrant, and this "
                    "operator does not use them (flowexport run --account-grants Off): give "
                    "spec.aws.roleArn instead; no AWS call was made"
                )
            if aws.role_arn is None:
                return None
            return AccountAccess(aws.account or "", aws.role_arn, None, None, session)
        account, role = aws.account, aws.role_arn
        if not self.grants.synced:
            await self.grants.wait_synced()
        key = f"{GRANT_KEY}{account or ''}|{aws.region}|{role or ''}"
        self.versions[key] = self.grants.fingerprint(self.namespace, account, aws.region, role)
        try:
            access = self.grants.resolve(self.namespace, account, aws.region, role_arn=role)
        except FlowExportError:
            self.grants.use(self.namespace, self.name, None)
            raise
        self.grants.use(self.namespace, self.name, access.grant_name)
        return dataclasses.replace(access, session_name=access.session_name or session)

    async def read(self, name: str, kind: SecretKind) -> Mapping[str, str] | None:
        """The Secret's values, or None when it does not exist (noted, so its creation counts).

        Raises ConfigError when the Secret is not labelled for `kind`, holds a needed value
        that is not text, or is PCE credentials for a host not allowed."""
        if kind is not SecretKind.AWS_CREDENTIALS and (
            self.pce is None or self.pce not in self.allowed
        ):
            where = host_port_text(self.pce) if self.pce is not None else "?"
            raise ConfigError(
                f"the PCE at {where} is not one this operator may send API keys to: its "
                f"administrator allows it with `flowexport run --allowed-pce-host {where}` (Helm "
                "value operator.allowedPceHosts); until then no key leaves the cluster for it",
                Reason.PCE_HOST_NOT_ALLOWED,
            )
        found = await self.api.read_secret(self.namespace, name)
        if found is None:
            self.versions[name] = ""
            return None
        self.versions[name] = found.fingerprint
        label = found.labels.get(SECRET_TYPE_LABEL)
        if label != kind:
            found_as = f" (it is labelled {label})" if label else ""
            raise ConfigError(
                f"Secret {self.namespace}/{name} is not marked for this use{found_as}: label it "
                f"{SECRET_TYPE_LABEL}={kind} if the operator may use it",
                Reason.SECRET_NOT_LABELLED,
            )
        binary = [key for key in found.not_text if key in kind.keys]
        if binary:
            raise ConfigError(
                f"Secret {self.namespace}/{name} key {binary[0]} is not UTF-8 text",
                Reason.SECRET_INVALID,
            )
        return found.values

    def missing(self, name: str, kind: SecretKind) -> ConfigError:
        """In a cluster every referenced Secret must exist."""
        return ConfigError(
            f"Secret {self.namespace}/{name} does not exist", Reason.SECRET_NOT_FOUND
        )


async def secrets_changed(
    api: KubeClient, versions: Versions, namespace: str, grants: GrantBook | None = None
) -> str | None:
    """The first Secret in `versions` that has changed (or appeared, or gone) since it was
    read, or the first account decision that would now be another (an AccountGrant or the
    namespace's labels changed), or None."""
    for name, version in list(versions.items()):
        if name.startswith(GRANT_KEY):
            account, region, role = name.removeprefix(GRANT_KEY).split("|")
            now = (
                grants.fingerprint(namespace, account or None, region or None, role or None)
                if grants is not None
                else ""
            )
            if now != version:
                return f"AccountGrant for account {account or '(own identity)'}"
            continue
        found = await api.read_secret(namespace, name)
        if (found.fingerprint if found else "") != version:
            return name
    return None
