"""The README and docs/ stay true to the code: the front page stays short and keeps its two
commands, every relative link resolves, and the reference pages say what the code does."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from flowexport.api.crd import build_crd
from flowexport.core.logformat import PIPELINE_FORMAT
from flowexport.errors import Reason
from flowexport.kube.cleanup import SKIP_CLEANUP_ANNOTATION
from tests.markdown import anchors, slug, without_code_blocks

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
CLI = (DOCS / "cli.md").read_text()
HOW = (DOCS / "how-it-works.md").read_text()
PAGES = [
    ROOT / "README.md",
    *sorted(DOCS.glob("*.md")),
    ROOT / "charts" / "flowexport-operator" / "README.md",
]


def test_the_readme_is_a_front_page() -> None:
    assert len(README.splitlines()) <= 200


def test_the_readme_documents_the_two_commands() -> None:
    section = README.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_the_docs_pages_exist() -> None:
    names = {p.name for p in DOCS.glob("*.md")}
    assert {
        "cli.md",
        "operator.md",
        "conditions.md",
        "install.md",
        "how-it-works.md",
        "development.md",
        "migrating.md",
    } <= names
    for name in names:
        assert f"(docs/{name})" in README, f"the README does not link docs/{name}"


def _links(text: str) -> list[str]:
    prose = re.sub(r"`[^`\n]*`", "", without_code_blocks(text))
    return re.findall(r"\]\(([^)\s]+)\)", prose)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    text = page.read_text()
    for link in _links(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):
            continue  # https:, mailto: ...
        path, _, anchor = unquote(link).partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link} points to a missing file"
        assert ROOT in target.parents or target == ROOT, f"{page.name}: {link} leaves the repo"
        if anchor:
            assert target.suffix == ".md", f"{page.name}: {link} has an anchor into a non-page"
            headings = anchors(target.read_text())
            assert anchor in headings, f"{page.name}: {link} names no heading of {target.name}"


def test_the_slugs_are_githubs() -> None:
    assert slug("2. AWS: the operator's role and the delivery role") == (
        "2-aws-the-operators-role-and-the-delivery-role"
    )
    assert slug("`flowexport kube-sim`") == "flowexport-kube-sim"


def test_the_readme_lists_every_subcommand_with_its_docs_section() -> None:
    shown = re.findall(
        r"^\| \[`flowexport ([a-z-]+)`\]\(docs/cli\.md#flowexport-\1\) \|", README, flags=re.M
    )
    documented = re.findall(r"^## `flowexport ([a-z-]+)`$", CLI, flags=re.M)
    expected = ["parse", "upload", "sync", "pce-sim", "run", "demo", "kube-sim", "crd"]
    assert shown == expected
    assert documented == expected


def _field_names(node: dict[str, Any]) -> set[str]:
    names = set()
    for name, sub in node.get("properties", {}).items():
        names.add(name)
        names |= _field_names(sub)
        if isinstance(sub.get("items"), dict):
            names |= _field_names(sub["items"])
    return names


def test_reference_mentions_every_spec_and_status_field() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    reference = HOW.split("## FlowExport reference", 1)[1].split("\n## ", 1)[0]
    for part in ("spec", "status"):
        for name in _field_names(schema["properties"][part]):
            if name in {"name", "type", "status", "reason", "message", "lastTransitionTime"}:
                continue  # Secret-ref and condition members, shown as {name: ...} and [...]
            assert re.search(rf"\b{name}\b", reference), f"the reference lacks {part} {name}"


def test_docs_show_the_real_default_format() -> None:
    block = HOW.split("decide a flow first", 1)[1].split("```")[1]
    assert " ".join(block.split()) == PIPELINE_FORMAT.render()


def test_docs_parse_example_is_real_output() -> None:
    shown = next(x for x in CLI.splitlines() if x.startswith('{"records"'))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowexport",
            "parse",
            "--actions",
            "ACCEPT,REJECT",
            str(ROOT / "examples" / "flowlogs" / "sample.log"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(shown) == json.loads(result.stderr)
    for flow in ("172.31.16.139,172.31.16.21,22,6", "10.0.1.15,10.0.2.40,5432,6"):
        assert flow in CLI
        assert flow in result.stdout.splitlines()


def _iam_pattern(resource: str) -> re.Pattern[str]:
    """An IAM resource with wildcards as a regex (`*` any run of characters, `?` one)."""
    return re.compile(re.escape(resource).replace(r"\*", ".*").replace(r"\?", "."))


def _iam_resources(document: str, action: str) -> list[re.Pattern[str]]:
    policy = json.loads((ROOT / "iam" / document).read_text())
    found = []
    for statement in policy["Statement"]:
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        if action in actions:
            resources = statement["Resource"]
            found += [
                _iam_pattern(r) for r in ([resources] if isinstance(resources, str) else resources)
            ]
    return found


#: Which role each spec field names, and the IAM permission that lets the operator use it.
_ROLE_FIELDS = {
    "roleArn": ("operator-assume-role-policy.json", "sts:AssumeRole"),
    "deliverLogsRoleArn": ("operator-policy.json", "iam:PassRole"),
    "subscriptionRoleArn": ("operator-policy.json", "iam:PassRole"),
}
_ARN_PAGES = [*PAGES, *sorted((ROOT / "examples").rglob("*.yaml"))]


@pytest.mark.parametrize("page", _ARN_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_role_the_docs_and_examples_name_is_one_iam_lets_the_operator_use(
    page: Path,
) -> None:
    """A multi-account example that names a role iam/ does not allow fails the first time it
    is copied: each role named is one the operator may assume or pass, by iam/'s documents."""
    text = page.read_text()
    for field, arn in re.findall(
        r"\b(\w*[rR]oleArn)\b\W+(arn:aws:iam::\S+?:role/[\w+=,.@/-]+)", text
    ):
        if field not in _ROLE_FIELDS:
            continue
        document, action = _ROLE_FIELDS[field]
        allowed = _iam_resources(document, action)
        assert any(p.fullmatch(arn) for p in allowed), (
            f"{page.name}: {field} {arn} is not a role iam/{document} allows for {action}"
        )


def _posted_event_reasons() -> dict[str, str]:
    """Every Event reason the operator's code posts as a literal (a string, or a `Reason`
    member) -> where: `.post(body, type, reason, message)`, a source's `.announce(reason,
    message)`, kopf's `info`/`warn`/`event`/`exception(reason=...)`. Reasons passed on from a
    condition or an error are `Reason`s, which the reason table of docs/conditions.md lists."""
    package = ROOT / "operator" / "flowexport"
    found: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        if "sim" in path.relative_to(package).parts:
            continue  # the simulators post nothing on FlowExports
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            reason: ast.expr | None = None
            if node.func.attr == "post" and len(node.args) >= 3:
                reason = node.args[2]  # events.post(body, type, reason, message)
            elif node.func.attr == "announce" and node.args:
                reason = node.args[0]  # a source's announce(reason, message)
            elif node.func.attr in {"info", "warn", "event", "exception"}:
                reason = next((k.value for k in node.keywords if k.arg == "reason"), None)
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if isinstance(reason, ast.Constant) and isinstance(reason.value, str):
                found[reason.value] = where
            elif (
                isinstance(reason, ast.Attribute)
                and isinstance(reason.value, ast.Name)
                and reason.value.id == "Reason"
            ):
                found[Reason[reason.attr].value] = where
    return found


def test_every_event_reason_is_documented() -> None:
    posted = _posted_event_reasons()
    for reason in ("StreamStarted", "CleanupSkipped", "SubscriptionChanged", "Ready"):
        assert reason in posted, f"the search misses {reason}"  # the finder finds
    documented = (DOCS / "operator.md").read_text() + (DOCS / "conditions.md").read_text()
    for reason, where in posted.items():
        assert f"`{reason}`" in documented, f"Event reason {reason} ({where}) is not documented"


def test_every_condition_reason_is_in_the_reason_table() -> None:
    """Condition reasons are Event reasons too (one Event per transition)."""
    table = (DOCS / "conditions.md").read_text().split("## Reasons", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)` \|", table, flags=re.M))
    assert {r.value for r in Reason} <= listed


def test_the_skip_cleanup_annotation_is_documented() -> None:
    operator_page = (DOCS / "operator.md").read_text()
    assert f"{SKIP_CLEANUP_ANNOTATION}=true" in operator_page
