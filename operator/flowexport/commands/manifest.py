"""Read a FlowExport and the Secrets it references from manifest files (for `flowexport sync`)."""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flowexport.api.grants import AccountAccess, session_name
from flowexport.api.models import AwsSpec, FlowExportSpec
from flowexport.api.objects import (
    check_flowexport,
    is_flowexport,
    yaml_documents,
    yaml_problem,
)
from flowexport.aws.ownership import Owner
from flowexport.errors import ConfigError, Reason
from flowexport.secrets import SecretKind

log = logging.getLogger("flowexport.sync")


class ManifestError(ValueError):
    """The manifest cannot be used; the message says why."""


@dataclass
class Manifest:
    """One FlowExport, with the Secrets found beside it (name -> key -> value)."""

    name: str
    namespace: str
    generation: int
    spec: FlowExportSpec
    secrets: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    #: metadata.uid, when the file has one (`kubectl get -o yaml` keeps it): the names the
    #: operator makes carry its hash, so `sync` then names them as the operator does.
    uid: str = ""

    @property
    def owner(self) -> Owner:
        """Whose AWS resources these are: the ownership tag value, with the uid."""
        return Owner(self.namespace, self.name, self.uid)

    def secret(self, name: str, key: str) -> str | None:
        """A Secret value, if the manifest carries that Secret and key."""
        return self.secrets.get(name, {}).get(key)


def load_manifest(path: Path) -> Manifest:
    """Parse the YAML documents of `path`: exactly one FlowExport, any number of Secrets."""
    try:
        documents = yaml_documents(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path} is not UTF-8 text (a YAML manifest)") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path} is not valid YAML: {yaml_problem(exc)}") from None
    exports = [d for d in documents if is_flowexport(d)]
    if len(exports) != 1:
        raise ManifestError(f"{path} must hold exactly one FlowExport, found {len(exports)}")
    export = exports[0]
    # as the API server's admission: apiVersion, kind, metadata and a strict (uncoerced) spec
    spec = check_flowexport(export)
    metadata = export["metadata"]
    name = metadata["name"]
    namespace = str(metadata.get("namespace") or "default")
    secrets = {}
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") == "Secret":
            meta = doc.get("metadata") or {}
            if str(meta.get("namespace") or namespace) == namespace and meta.get("name"):
                secrets[str(meta["name"])] = secret_data(doc)
    generation = int(metadata.get("generation") or 1)
    uid = str(metadata.get("uid") or "")
    return Manifest(name, namespace, generation, spec, secrets, uid)


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret's values: `data` (base64) overlaid by `stringData`, as the API server does."""
    values: dict[str, str] = {}
    for key, encoded in (secret.get("data") or {}).items():
        try:
            values[str(key)] = base64.b64decode(str(encoded), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            name = (secret.get("metadata") or {}).get("name")
            raise ManifestError(f"Secret {name} key {key} is not base64 text") from None
    values.update({str(k): str(v) for k, v in (secret.get("stringData") or {}).items()})
    return values


class ManifestSecrets:
    """The Secrets of a manifest file, with the environment as a fallback (for `sync`).

    The PCE key may come from PCE_API_KEY and PCE_API_SECRET; AWS keys missing from the file
    mean the AWS default credential chain (environment, profile, instance role).
    """

    def __init__(
        self,
        manifest: Manifest,
        environ: Mapping[str, str] | None = None,
        external_id: str | None = None,
    ) -> None:
        self.manifest = manifest
        self.environ = os.environ if environ is None else environ
        #: `sync --external-id`: sent with AssumeRole of spec.aws.roleArn.
        self.external_id = external_id

    async def read(self, name: str, kind: SecretKind) -> Mapping[str, str] | None:
        """The Secret from the file, or for the PCE key the environment's."""
        values = self.manifest.secrets.get(name)
        if values is not None:
            return values
        if kind is SecretKind.PCE_CREDENTIALS:
            username = self.environ.get("PCE_API_KEY")
            secret = self.environ.get("PCE_API_SECRET")
            if username and secret:
                return {"username": username, "password": secret}
        return None

    async def account_access(self, aws: AwsSpec) -> AccountAccess | None:
        """`sync` runs as the user's own AWS identity: no AccountGrant applies. spec.aws.roleArn
        is assumed with --external-id (if given) and the session name of the manifest's
        FlowExport; spec.aws.accountId alone names no role outside a cluster."""
        if aws.role_arn is None:
            if aws.account_id is not None:
                log.info(
                    "spec.aws.accountId %s selects an AccountGrant in a cluster; sync uses "
                    "your own AWS identity (give roleArn to assume a role)",
                    aws.account_id,
                )
            return None
        namespace, _, name = str(self.manifest.owner).partition("/")
        return AccountAccess(
            aws.account or "",
            aws.role_arn,
            self.external_id,
            None,
            session_name(namespace, name),
        )

    def missing(self, name: str, kind: SecretKind) -> ConfigError | None:
        """Where to put a Secret the file lacks; AWS keys fall back to the default chain."""
        if kind is SecretKind.AWS_CREDENTIALS:
            log.info("Secret %s not in the file: using the AWS default credential chain", name)
            return None
        if kind is SecretKind.PCE_CREDENTIALS:
            return ConfigError(
                f"no PCE credentials: put Secret {name} (keys username, password) in the file "
                "or set PCE_API_KEY and PCE_API_SECRET",
                Reason.SECRET_NOT_FOUND,
            )
        return ConfigError(
            f"Secret {name} with key ca.crt not found in the file", Reason.SECRET_NOT_FOUND
        )
