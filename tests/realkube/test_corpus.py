"""`flowexport sync` validates a manifest exactly as the real API server's admission does.

Each case of the corpus (tests/realkube/corpus.py) goes through `sync`'s manifest loading and
through `kubectl apply --dry-run=server` (strict field validation, as kubectl does by default)
against the real server; the verdicts must agree case by case, and with the corpus.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flowexport.api.validation import SpecError
from flowexport.commands.manifest import ManifestError, load_manifest
from tests.realkube.controlplane import ControlPlane
from tests.realkube.corpus import CASES, Case

KUBECTL = str(Path(sys.executable).with_name("kubectl"))


def sync_verdict(case: Case, directory: Path, namespace: str = "security") -> tuple[bool, str]:
    """(admitted, why not) as `flowexport sync` loads the manifest."""
    path = directory / f"{case.id}.yaml"
    path.write_text(case.text.replace("NAMESPACE", namespace))
    try:
        load_manifest(path)
    except (SpecError, ManifestError) as exc:
        return False, str(exc)
    return True, ""


def server_verdict(
    plane: ControlPlane, case: Case, directory: Path, namespace: str
) -> tuple[bool, str]:
    """(admitted, why not) from `kubectl apply --dry-run=server` against the real server."""
    path = directory / f"{case.id}.server.yaml"
    path.write_text(case.text.replace("NAMESPACE", namespace))
    done = subprocess.run(
        [
            KUBECTL,
            f"--kubeconfig={plane.kubeconfig}",
            "apply",
            "--dry-run=server",
            "-n",
            namespace,
            "-f",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode == 0, (done.stderr or done.stdout).strip()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sync_verdicts(case: Case, tmp_path: Path) -> None:
    """Offline: `sync` admits exactly the cases the API server admits."""
    admitted, why = sync_verdict(case, tmp_path)
    assert admitted == case.valid, f"sync {'admitted' if admitted else 'refused'}: {why}"


def test_sync_never_echoes_a_refused_url_secret(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == "pce-url-credentials")
    admitted, why = sync_verdict(case, tmp_path)
    assert not admitted
    assert "secret@" not in why


def test_the_real_server_agrees_with_sync(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """Every case through both; all disagreements reported at once."""
    with ThreadPoolExecutor(4) as pool:
        server = list(
            pool.map(lambda c: server_verdict(control_plane, c, tmp_path, namespace), CASES)
        )
    wrong = []
    for case, (admitted, why) in zip(CASES, server, strict=True):
        sync_admitted, sync_why = sync_verdict(case, tmp_path, namespace)
        if admitted != case.valid or sync_admitted != admitted:
            wrong.append(
                f"{case.id}: expected {'admitted' if case.valid else 'refused'}; "
                f"server {'admitted' if admitted else 'refused: ' + why[:300]}; "
                f"sync {'admitted' if sync_admitted else 'refused: ' + sync_why[:300]}"
            )
    assert not wrong, "\n".join(wrong)
