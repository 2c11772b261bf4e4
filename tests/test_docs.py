"""The README and docs/ stay true to the code: the front page stays short and keeps its two
commands, every relative link resolves, and the reference pages say what the code does."""

from __future__ import annotations

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


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", _without_code_blocks(text), flags=re.M):
        slug = _slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _without_code_blocks(text: str) -> str:
    return re.sub(r"^ *```.*?^ *```", "", text, flags=re.M | re.S)


def _links(text: str) -> list[str]:
    prose = re.sub(r"`[^`\n]*`", "", _without_code_blocks(text))
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
            anchors = _anchors(target.read_text())
            assert anchor in anchors, f"{page.name}: {link} names no heading of {target.name}"


def test_the_slugs_are_githubs() -> None:
    assert _slug("2. AWS: the operator's role and the delivery role") == (
        "2-aws-the-operators-role-and-the-delivery-role"
    )
    assert _slug("`flowexport kube-sim`") == "flowexport-kube-sim"


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
