"""The package's layers: nothing imports upward, the image carries no stand-in, and only the
source seam knows the read modes (docs/development.md#code-map)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

from flowexport.sources import SOURCES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "operator" / "flowexport"

#: Each part of the package, bottom to top: a module imports only parts below its own (or
#: its own part). `errors` is the ground floor.
LAYERS: dict[str, int] = {
    "errors": 0,
    "urls": 1,
    "core": 1,
    "api": 2,
    "aws": 3,
    "pce": 3,
    "secrets": 3,
    "pipeline": 4,
    "workloads": 4,
    "sources": 5,
    "fleet": 6,
    "lifecycle": 6,
    "kube": 7,
    "commands": 8,
    "cli": 9,
    "__main__": 10,
    "__init__": 10,
    "sim": 11,
}

#: Packages the simulators import that come with one of the demo extra's, or under another
#: name than their distribution's.
VIA = {"multidict": "aiohttp", "yarl": "aiohttp", "celpy": "cel-python"}

#: The runtime requirements each stand for these import names.
DISTRIBUTIONS = {"PyYAML": "yaml", "prometheus-client": "prometheus_client"}


def _part(module: str) -> str:
    """`flowexport.kube.worker` -> `kube`."""
    return module.split(".")[1] if module.count(".") else "__init__"


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text())
    return found


def _imports(tree: ast.Module, top_level_only: bool) -> set[str]:
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_module_imports_a_layer_above_its_own() -> None:
    modules = _modules()
    wrong = []
    for name, tree in modules.items():
        own = _part(name)
        if own == "__init__" and name != "flowexport":
            continue
        for imported in _imports(tree, top_level_only=False):
            if not imported.startswith("flowexport.") or imported not in modules:
                continue
            other = _part(imported)
            if own == "commands" and other == "sim":
                continue  # `demo`, `pce-sim`, `kube-sim`, when run (see the next tests)
            if other != own and LAYERS[other] >= LAYERS[own]:
                wrong.append(f"{name} imports {imported}")
    assert wrong == []


def test_every_part_has_a_layer() -> None:
    assert {_part(name) for name in _modules()} <= set(LAYERS)


def test_the_ground_floor_imports_nothing_of_the_project() -> None:
    tree = _modules()["flowexport.errors"]
    assert not [i for i in _imports(tree, False) if i.startswith("flowexport")]


def test_only_the_simulator_commands_reach_the_simulators_and_only_when_run() -> None:
    """The product never imports `flowexport.sim` at module level (the image drops it)."""
    wrong = []
    for name, tree in _modules().items():
        if _part(name) == "sim":
            continue
        if any(i.startswith("flowexport.sim") for i in _imports(tree, top_level_only=True)):
            wrong.append(name)
    assert wrong == []


def test_the_runtime_requirements_hold_nothing_only_the_simulators_use() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    product: set[str] = set()
    simulators: set[str] = set()
    for name, tree in _modules().items():
        roots = {i.split(".")[0] for i in _imports(tree, False)}
        (simulators if _part(name) == "sim" else product).update(roots)
    for requirement in project["dependencies"]:
        distribution = requirement.split(">")[0].split("=")[0].split("[")[0].strip()
        module = DISTRIBUTIONS.get(distribution, distribution.replace("-", "_"))
        assert module in product, f"{distribution} is a runtime requirement nobody imports"
    only_sim = simulators - product - {"flowexport"}
    demo = " ".join(project["optional-dependencies"]["demo"])
    for module in sorted(only_sim):
        if module in {m.split(".")[0] for m in _stdlib()}:
            continue
        required = " ".join(project["dependencies"])
        assert module not in required, f"{module} is only the simulators' but a runtime requirement"
        assert module in demo or VIA.get(module, module) in demo, (
            f"{module} is not in the demo extra"
        )


def _stdlib() -> frozenset[str]:

    return frozenset(sys.stdlib_module_names)


def test_no_module_outside_the_source_seam_compares_a_mode_name() -> None:
    """Only `flowexport.sources` (and the demo's stand-ins) may branch on a read mode."""
    modes = set(SOURCES)
    wrong = []
    for name, tree in _modules().items():
        if _part(name) in ("sources", "sim"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(isinstance(o, ast.Constant) and o.value in modes for o in operands):
                    wrong.append(f"{name}:{node.lineno}")
    assert wrong == []


def _code_map() -> str:
    text = (ROOT / "docs" / "development.md").read_text()
    return text.split("## Code map", 1)[1].split("```", 2)[1]


def test_the_code_map_names_every_module_and_only_modules_that_exist() -> None:
    block = _code_map()
    names = set(re.findall(r"\w+\.py", block)) | set(re.findall(r"^(\w+/)", block, re.M))
    present = {p.name for p in PACKAGE.rglob("*.py")} | {
        f"{p.name}/" for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"
    }
    missing = sorted(
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if p.name not in names
        and p.name != "__main__.py"
        and "sim/kube" not in p.as_posix()
        and not (p.name == "__init__.py" and p.parent != PACKAGE / "sources")
    )
    assert missing == [], "docs/development.md's code map does not name these"
    assert names - present == set(), "the code map names modules that do not exist"


def test_the_tests_are_laid_out_as_the_code_map_says() -> None:
    parts = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name[0] != "_"}
    assert folders - {"e2e", "faults", "deploy", "realkube"} <= parts
