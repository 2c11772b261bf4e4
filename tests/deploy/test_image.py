"""The Dockerfile, read as Docker reads it (no Docker engine here): stages, user, entrypoint,
labels, and agreement with the chart. The build stage's commands themselves are run by
`test_the_build_stage_commands_work` (marker `network`: it installs from PyPI)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flowexport import __version__
from flowexport.cli import build_parser
from flowexport.kube.metrics import REVISION_ENV
from tests.chart import ROOT, of_kind, render
from tests.deploy.runtime_deps import render as render_constraints
from tests.deploy.runtime_deps import runtime_closure

DOCKERFILE = (ROOT / "Dockerfile").read_text()
CONSTRAINTS = ROOT / "constraints.txt"
#: What the build stage copies from the repository.
BUILD_SOURCES = ["LICENSE", "README.md", "constraints.txt", "operator", "pyproject.toml"]
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "python3-dev", "libffi-dev", "git")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages and keyword == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


ARGS, STAGES = parse(DOCKERFILE)
FINAL = STAGES[-1]


def expand(text: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: ARGS.get(m.group(1), m.group(0)), text)


def labels() -> dict[str, str]:
    found = {}
    for arg in FINAL.all("LABEL"):
        for pair in shlex.split(arg):
            key, _, value = pair.partition("=")
            found[key] = value
    return found


def test_two_stages_from_one_slim_python() -> None:
    assert [s.name for s in STAGES] == ["build", None]
    bases = {expand(s.base) for s in STAGES}
    assert len(bases) == 1  # the venv's interpreter path is the same in both
    (base,) = bases
    assert re.fullmatch(r"python:3\.1[1-9]-slim-\w+", base)


def test_the_final_image_holds_only_the_environment() -> None:
    copies = FINAL.all("COPY")
    assert copies == ["--from=build /opt/flowexport /opt/flowexport"]
    runs = " ".join(FINAL.all("RUN"))
    assert not any(re.search(rf"\b{re.escape(tool)}\b", runs) for tool in BUILD_TOOLS)
    assert "apt-get" not in runs and "pip" not in runs


def test_the_build_installs_binary_wheels_only_and_drops_pip() -> None:
    (run,) = STAGES[0].all("RUN")
    assert "--only-binary=:all:" in run
    assert "uninstall --yes pip setuptools" in run
    assert "apt-get" not in run  # nothing to compile, so no compiler


def test_the_build_installs_the_versions_the_tests_ran_with() -> None:
    """An image built next month gets the dependencies pinned in constraints.txt, which are
    the runtime dependencies of the environment these tests run in."""
    (run,) = STAGES[0].all("RUN")
    install = next(
        part for part in run.split("&&") if "/wheels/*.whl" in part and "install" in part
    )
    assert "--constraint constraints.txt" in install
    pinned = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[name] = version
    assert pinned == runtime_closure(), (
        "constraints.txt is not what this environment runs: `make constraints` after changing "
        "dependencies, or install with `--constraint constraints.txt` (what `make` does)"
    )
    assert CONSTRAINTS.read_text() == render_constraints(runtime_closure())
    assert {"kopf", "boto3", "botocore", "httpx", "pydantic", "prometheus-client"} <= set(pinned)
    assert not {"moto", "pytest", "aiohttp-jinja2", "jsonschema", "ruff"} & set(pinned)


def test_the_image_knows_its_revision() -> None:
    env = " ".join(FINAL.all("ENV"))
    assert f"{REVISION_ENV}=${{REVISION}}" in env
    assert any(a.startswith("REVISION=") for a in FINAL.all("ARG"))


def test_it_runs_as_the_non_root_user_the_chart_expects() -> None:
    (user,) = FINAL.all("USER")
    uid, gid = (int(x) for x in user.split(":"))
    assert uid != 0 and gid != 0
    (run,) = FINAL.all("RUN")
    assert f"--uid {uid}" in run and f"--gid {gid}" in run
    (deployment,) = of_kind(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid)


def test_nothing_writes_to_the_read_only_root() -> None:
    env = " ".join(FINAL.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    (run,) = STAGES[0].all("RUN")
    assert "compileall" in run  # bytecode made at build time instead


def test_entrypoint_is_flowexport_run_and_the_default_command_parses() -> None:
    (entrypoint,) = FINAL.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["flowexport", "run"]
    (cmd,) = FINAL.all("CMD")
    args = build_parser().parse_args(["run", *json.loads(cmd)])
    assert args.all_namespaces
    exposed = {int(p) for p in FINAL.all("EXPOSE")[0].split()}
    assert exposed == {8080, 9090}
    assert args.liveness == "http://0.0.0.0:8080/healthz" and args.metrics_port == 9090


def test_oci_labels() -> None:
    found = labels()
    for key in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}" in found, key
    assert found["org.opencontainers.image.licenses"] == "Apache-2.0"
    version_default = next(a for a in FINAL.all("ARG") if a.startswith("VERSION="))
    assert version_default == f"VERSION={__version__}"


def test_the_build_context_holds_only_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    allowed = [word for word in ignore[ignore.index("*") + 1 :] if word.startswith("!")]
    sources = [word for arg in STAGES[0].all("COPY") for word in arg.split()[:-1]]
    assert sorted(w.strip("!/") for w in allowed) == sorted(sources) == BUILD_SOURCES


@pytest.mark.network
@pytest.mark.timeout(900)
def test_the_build_stage_commands_work(tmp_path: Path) -> None:
    """Run the build stage's RUN line here, with its paths moved under tmp_path: the wheel
    builds, every dependency installs from a binary wheel, and the result runs."""
    (run,) = STAGES[0].all("RUN")
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_SOURCES:
        if name != "operator":
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "operator",
        src / "operator",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    command = (
        run.replace("/opt/flowexport", str(tmp_path / "venv"))
        .replace("/wheels", str(tmp_path / "wheels"))
        .replace("python -m", f"{sys.executable} -m", 2)
    )
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(f"flowexport {__version__}")
    venv = tmp_path / "venv"
    assert not (venv / "bin" / "pip").exists()
    check = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import flowexport.kube.handlers, flowexport.commands.run, boto3;"
            "[boto3.client(s, region_name='us-east-1') for s in ('ec2', 'logs', 'sts')]",
        ],
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stderr[-3000:]


@pytest.mark.network
@pytest.mark.timeout(900)
@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_every_dependency_has_a_wheel_for_linux(arch: str, tmp_path: Path) -> None:
    """`--only-binary=:all:` holds on both architectures, so `docker buildx --platform
    linux/amd64,linux/arm64` (e.g. Graviton nodes) needs no compiler either."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    wheel = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path / "own"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    (own,) = (tmp_path / "own").glob("*.whl")
    platforms = [f"--platform=manylinux{v}_{arch}" for v in ("2014", "_2_17", "_2_28")]
    download = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--only-binary=:all:",
            *platforms,
            "--python-version=3.11",
            "--implementation=cp",
            "-d",
            str(tmp_path / "deps"),
            str(own),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert download.returncode == 0, download.stderr[-3000:]
    assert len(list((tmp_path / "deps").glob("*.whl"))) > 20
