"""The operator's `SecretSource`: Secrets read through the Kubernetes API, versions noted.

Each Secret read records its resourceVersion, so the resync timer notices when one changes
(or appears) and reconciles. Values go straight to the clients; no message carries one.
"""

from __future__ import annotations

from collections.abc import Mapping

from flowexport.api.conditions import Reason
from flowexport.errors import ConfigError
from flowexport.kube.api import KubeClient
from flowexport.secrets import SecretKind

#: resourceVersion of each Secret read ("" for one that did not exist).
Versions = dict[str, str]


class KubeSecrets:
    """Secrets of one namespace; `versions` holds what was read, for change detection."""

    def __init__(self, api: KubeClient, namespace: str, versions: Versions | None = None) -> None:
        self.api = api
        self.namespace = namespace
        self.versions: Versions = {} if versions is None else versions

    async def read(self, name: str, kind: SecretKind) -> Mapping[str, str] | None:
        """The Secret's values, or None when it does not exist (noted, so its creation counts)."""
        found = await self.api.read_secret(self.namespace, name)
        if found is None:
            self.versions[name] = ""
            return None
        values, version = found
        self.versions[name] = version
        return values

    def missing(self, name: str, kind: SecretKind) -> ConfigError:
        """In a cluster every referenced Secret must exist."""
        return ConfigError(
            f"Secret {self.namespace}/{name} does not exist", Reason.SECRET_NOT_FOUND
        )


async def secrets_changed(api: KubeClient, versions: Versions, namespace: str) -> bool:
    """Whether any Secret in `versions` has changed (or appeared, or gone) since it was read."""
    for name, version in list(versions.items()):
        found = await api.read_secret(namespace, name)
        if (found[1] if found else "") != version:
            return True
    return False
