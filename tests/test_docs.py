"""The README's reference stays true to the code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from flowexport.api.crd import build_crd
from flowexport.core.logformat import PIPELINE_FORMAT

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


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
    reference = README.split("## FlowExport reference", 1)[1].split("\n## ", 1)[0]
    for part in ("spec", "status"):
        for name in _field_names(schema["properties"][part]):
            if name in {"name", "type", "status", "reason", "message", "lastTransitionTime"}:
                continue  # Secret-ref and condition members, shown as {name: ...} and [...]
            assert re.search(rf"\b{name}\b", reference), f"README reference lacks {part} {name}"


def test_readme_shows_the_real_default_format() -> None:
    block = README.split("decide a flow first", 1)[1].split("```")[1]
    assert " ".join(block.split()) == PIPELINE_FORMAT.render()


def test_readme_parse_example_is_real_output() -> None:
    shown = next(x for x in README.splitlines() if x.startswith('{"records"'))
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowexport",
            "parse",
            "--actions",
            "ACCEPT,REJECT",
            str(root / "examples" / "flowlogs" / "sample.log"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(shown) == json.loads(result.stderr)
    for flow in ("172.31.16.139,172.31.16.21,22,6", "10.0.1.15,10.0.2.40,5432,6"):
        assert flow in README
        assert flow in result.stdout.splitlines()
