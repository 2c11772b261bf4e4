"""Credentials from the Secrets a FlowExport references, read through the Kubernetes API.

Values are passed straight to the AWS and PCE clients; no message here carries one.
"""

from __future__ import annotations

from flowexport.api.models import FlowExportSpec
from flowexport.aws.session import AwsKeys, AwsTarget
from flowexport.kube.api import KubeApi
from flowexport.pce.client import PCEClient, PCECredentials
from flowexport.pce.errors import PCEError


class ConfigProblem(Exception):  # noqa: N818 - a problem for the user, not a program error
    """Something the user must fix (a Secret, a key); carries a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


#: resourceVersion of each Secret read ("" for one that did not exist).
Versions = dict[str, str]


async def read_secret(
    api: KubeApi, versions: Versions, namespace: str, name: str
) -> dict[str, str]:
    """A Secret's values; records its resourceVersion in `versions` so a change can be noticed."""
    found = await api.read_secret(namespace, name)
    if found is None:
        versions[name] = ""  # so that its creation counts as a change
        raise ConfigProblem("SecretNotFound", f"Secret {namespace}/{name} does not exist")
    values, version = found
    versions[name] = version
    return values


async def secrets_changed(api: KubeApi, versions: Versions, namespace: str) -> bool:
    """Whether any Secret in `versions` has changed (or appeared, or gone) since it was read."""
    for name, version in list(versions.items()):
        found = await api.read_secret(namespace, name)
        if (found[1] if found else "") != version:
            return True
    return False


async def aws_target(
    api: KubeApi, versions: Versions, namespace: str, spec: FlowExportSpec
) -> AwsTarget:
    """Where and as whom to call AWS: keys from a Secret if referenced, else the pod identity."""
    aws = spec.aws
    keys = None
    if aws.credentials_secret_ref is not None:
        ref = aws.credentials_secret_ref.name
        values = await read_secret(api, versions, namespace, ref)
        key_id, secret = values.get("aws_access_key_id"), values.get("aws_secret_access_key")
        if not key_id or not secret:
            raise ConfigProblem(
                "SecretInvalid",
                f"Secret {ref} needs keys aws_access_key_id and aws_secret_access_key",
            )
        keys = AwsKeys(key_id, secret, values.get("aws_session_token"))
    return AwsTarget(aws.region, aws.endpoint_url, aws.role_arn, keys, aws.api_requests_per_second)


async def pce_client(
    api: KubeApi, versions: Versions, namespace: str, spec: FlowExportSpec
) -> PCEClient:
    """A PCE client with the API key (and CA bundle) from the referenced Secrets."""
    pce = spec.pce
    ref = pce.credentials_secret_ref.name
    values = await read_secret(api, versions, namespace, ref)
    username, secret = values.get("username"), values.get("password")
    if not username or not secret:
        raise ConfigProblem(
            "SecretInvalid",
            f"Secret {ref} needs keys username (the API key's auth username) and password "
            "(its secret)",
        )
    ca_pem = None
    if pce.ca_bundle_secret_ref is not None:
        ca_ref = pce.ca_bundle_secret_ref.name
        ca_pem = (await read_secret(api, versions, namespace, ca_ref)).get("ca.crt")
        if not ca_pem:
            raise ConfigProblem("SecretInvalid", f"Secret {ca_ref} has no key ca.crt")
    try:
        return PCEClient(
            pce.url,
            pce.org_id,
            PCECredentials(username, secret),
            ca_pem=ca_pem,
            insecure=pce.insecure_skip_tls_verify,
        )
    except PCEError as exc:
        raise ConfigProblem(exc.reason, str(exc)) from None
