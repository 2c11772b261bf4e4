"""Render the Helm chart offline (helm-python-sdk binds Helm's own Go SDK: no helm binary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "flowexport-operator"
RELEASE_NAMESPACE = "flowexport-system"


def render_files(
    values: dict[str, Any] | None = None, namespace: str = RELEASE_NAMESPACE, name: str = "fx"
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` renders them for an install."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(values or {}, name=name, namespace=namespace, is_install=True)


def render(
    values: dict[str, Any] | None = None, namespace: str = RELEASE_NAMESPACE, name: str = "fx"
) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (NOTES.txt left out)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render_files(values, namespace, name).items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [o for o in objects if o["kind"] == kind]


def container_args(objects: list[dict[str, Any]]) -> list[str]:
    """The operator container's arguments in the rendered Deployment."""
    (deployment,) = of_kind(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    return args
