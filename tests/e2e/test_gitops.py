"""What GitOps tools do, with kubectl against the real operator: a prune deleting a FlowExport
and its AWS keys Secret together, a namespace deletion, and `kubectl wait` for Ready."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from flowexport.secrets import SECRET_TYPE_LABEL, SecretKind
from tests.e2e.conftest import FE, NS, Stack, eventually

KUBECTL = Path(sys.executable).with_name("kubectl")


def kubectl(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(stack.loop.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def manifest(stack: Stack, path: Path, **spec: object) -> Path:
    """A file holding a FlowExport and its own AWS keys Secret, as a GitOps repository has."""
    export = stack.flowexport(**{"aws.credentialsSecretRef": {"name": "prod-aws-keys"}, **spec})
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "prod-aws-keys",
            "namespace": NS,
            "labels": {SECRET_TYPE_LABEL: str(SecretKind.AWS_CREDENTIALS)},
        },
        "stringData": stack.loop.aws_credentials(),
    }
    path.write_text(yaml.safe_dump_all([secret, export]))
    return path


def aws_resources(stack: Stack) -> tuple[int, int]:
    flow_logs = stack.aws("ec2").describe_flow_logs()["FlowLogs"]
    groups = stack.aws("logs").describe_log_groups(logGroupNamePrefix="/flowexport/prod")
    return len(flow_logs), len(groups["logGroups"])


def test_a_prune_of_the_export_and_its_secret_completes_and_cleans_up(
    stack: Stack, tmp_path: Path
) -> None:
    path = manifest(stack, tmp_path / "export.yaml")
    assert kubectl(stack, "apply", "-f", str(path)).returncode == 0
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")
    assert aws_resources(stack) == (1, 1)
    deleted = kubectl(stack, "delete", "-f", str(path), "--wait=true", "--timeout=60s")
    assert deleted.returncode == 0, deleted.stderr
    eventually(lambda: stack.kube.get(f"{FE}/prod").status_code == 404, what="deletion")
    assert aws_resources(stack) == (0, 0), "the owned flow log and log group were removed"
    secret = stack.kube.get(f"/api/v1/namespaces/{NS}/secrets/prod-aws-keys")
    assert secret.status_code == 404, "the Secret went once the clean-up had used it"


def test_deleting_the_namespace_completes(stack: Stack, tmp_path: Path) -> None:
    path = manifest(stack, tmp_path / "export.yaml")
    assert kubectl(stack, "apply", "-f", str(path)).returncode == 0
    eventually(lambda: stack.condition("prod", "Ready") == ("True", "Ready"), what="Ready")
    deleted = kubectl(stack, "delete", "namespace", NS, "--wait=true", "--timeout=90s")
    assert deleted.returncode == 0, deleted.stderr
    eventually(
        lambda: stack.kube.get(f"/api/v1/namespaces/{NS}").status_code == 404,
        what="the namespace gone",
    )
    assert aws_resources(stack) == (0, 0)


def test_kubectl_wait_sees_ready_on_the_transition_not_the_next_poll(
    stack: Stack, tmp_path: Path
) -> None:
    # With a one-hour poll, Ready can reach the API within the wait's 60 s only if the
    # transition itself is written (not held back to the next poll's status write).
    path = manifest(stack, tmp_path / "export.yaml", **{"ingestion.pollIntervalSeconds": 3600})
    assert kubectl(stack, "apply", "-f", str(path)).returncode == 0
    waited = kubectl(
        stack, "wait", "--for=condition=Ready", "flowexport/prod", "-n", NS, "--timeout=60s"
    )
    assert waited.returncode == 0, waited.stderr
