"""docs/install.md's RBAC, IAM and values tables, and the `helm install` commands there and in
the README's quick start, say what the chart and iam/ really hold."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
import yaml

from tests.chart import CHART, ROOT, of_kind, render

README = (ROOT / "README.md").read_text()
INSTALL = (ROOT / "docs" / "install.md").read_text()
QUICK_START = README.split("## Helm quick start", 1)[1].split("\n## ", 1)[0]


def table_after(heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table after `heading`."""
    lines = INSTALL.split(heading, 1)[1].splitlines()
    lines = list(itertools.dropwhile(lambda line: not line.startswith("|"), lines))
    table = itertools.takewhile(lambda line: line.startswith("|"), lines)
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    return rows[2:]  # header and rule


def codes(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def watched_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The rules bound in each watched namespace (the namespaced install's ClusterRole)."""
    (role,) = [
        r for r in of_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith("-watched")
    ]
    return role


def test_the_rbac_table_is_the_chart_role() -> None:
    role = watched_role(render())
    chart = {
        (g, r): sorted(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    documented = {}
    for group, resource, verbs, _ in table_after("**RBAC, least privilege.**"):
        (g,) = codes(group)
        (r,) = codes(resource)
        documented[(g.strip('"'), r)] = sorted(v.strip() for v in verbs.split(","))
    assert documented == chart


def test_the_iam_table_is_the_operator_policy() -> None:
    policy = json.loads((ROOT / "iam" / "operator-policy.json").read_text())
    in_policy = {}
    for statement in policy["Statement"]:
        action = statement["Action"]
        in_policy[statement["Sid"]] = sorted([action] if isinstance(action, str) else action)
    documented = {
        codes(sid)[0]: sorted(codes(actions))
        for sid, actions, _, _ in table_after("**The operator's role**")
    }
    assert documented == in_policy


def _keys(values: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for name, value in values.items():
        path = f"{prefix}.{name}" if prefix else name
        keys.add(path)
        if isinstance(value, dict):
            keys |= _keys(value, path)
    return keys


def test_the_values_table_names_real_values() -> None:
    known = _keys(yaml.safe_load((CHART / "values.yaml").read_text()))
    for row in table_after("The ones that matter most:"):
        names = codes(row[0])
        assert names, row
        parent = ""
        for name in names:
            full = parent + name if name.startswith(".") else name
            assert full in known, f"install.md values table: {full} is not in values.yaml"
            parent = full.rsplit(".", 1)[0] if not name.startswith(".") else parent


@pytest.mark.parametrize(("where", "text"), [("install.md", INSTALL), ("README", QUICK_START)])
def test_the_install_command_uses_real_values(where: str, text: str) -> None:
    command = text.split("helm install flowexport", 1)[1].split("```", 1)[0]
    known = _keys(yaml.safe_load((CHART / "values.yaml").read_text()))
    keys = re.findall(r"--set '?([\w.\\/-]+?)=", command)
    assert keys, f"{where}: helm install sets nothing"
    for key in keys:
        path = re.split(r"(?<!\\)\.", key)
        top = ".".join(p for p in path if "\\" not in p and "/" not in p)
        assert top in known, f"{where}: helm install sets {key}, which values.yaml lacks"


def test_the_quick_start_installs_as_the_install_guide_does() -> None:
    def command(text: str) -> list[str]:
        block = text.split("helm install flowexport", 1)[1].split("```", 1)[0]
        return [line.strip(" \\") for line in block.splitlines() if line.strip(" \\")]

    assert command(QUICK_START) == command(INSTALL)


CHART_README = (CHART / "README.md").read_text()


def test_the_chart_readme_says_the_rbac_and_replicas_the_chart_has() -> None:
    objects = render({"replicas": 2})
    role = watched_role(objects)
    chart = {
        (g, r): sorted(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    lines = [line for line in CHART_README.splitlines() if line.startswith("| `")]
    documented = {}
    for line in lines:
        group, resource, verbs = (cell.strip() for cell in line.strip("|").split("|"))
        documented[(codes(group)[0].strip('"'), codes(resource)[0])] = sorted(
            v.strip() for v in verbs.split(",")
        )
    assert documented == chart
    (leases,) = [r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("-shards")]
    ((rule,),) = [leases["rules"]]
    assert f"`{rule['apiGroups'][0]}` `{rule['resources'][0]}`: {', '.join(rule['verbs'])}" in (
        " ".join(CHART_README.split())
    )
    default = of_kind(render(), "Deployment")[0]["spec"]
    assert default["replicas"] == 1 and default["strategy"]["type"] == "Recreate"
    assert "`replicas: 1` (the default)" in CHART_README and "`Recreate`" in CHART_README
    assert "leader election" not in CHART_README  # the replicas share through Leases
