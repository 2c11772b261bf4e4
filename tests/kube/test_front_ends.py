"""The operator and `flowexport sync` run the same lifecycle: one state, one reason, one message."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowexport.commands import sync
from flowexport.commands.common import UsageError
from flowexport.kube.reconcile import reconcile
from tests.kube.conftest import NS, World
from tests.pcesim import API_KEY, API_SECRET


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


def _sync_once(world: World, tmp_path: Path, spec: dict[str, Any], capsys: Any) -> dict[str, Any]:
    documents = [
        {
            "apiVersion": "flowexport.io/v1alpha1",
            "kind": "FlowExport",
            "metadata": {"name": "prod", "namespace": NS},
            "spec": spec,
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "pce-key"},
            "stringData": {"username": API_KEY, "password": API_SECRET},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "aws-keys"},
            "stringData": dict(world.kube.secrets[(NS, "aws-keys")].values),
        },
    ]
    path = tmp_path / "export.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    args = argparse.Namespace(
        file=path, once=True, state=None, settle=0.0, dry_run=False, external_id=None
    )
    capsys.readouterr()
    with contextlib.suppress(UsageError):  # exit 2: the status is printed all the same
        sync.run(args)
    printed: dict[str, Any] = json.loads(capsys.readouterr().out)
    return printed


@pytest.mark.parametrize(
    "overrides",
    [
        {"pce.orgId": 7},  # PCENotFound
        {"aws.manageLogGroup": False},  # LogGroupNotFound
        {},  # all well: Subscribed, Reachable
    ],
)
def test_both_front_ends_report_a_state_alike(
    world: World, tmp_path: Path, capsys: Any, overrides: dict[str, Any]
) -> None:
    spec = world.spec(**overrides)
    printed = _conditions(_sync_once(world, tmp_path, spec, capsys))
    body = world.body(**overrides)
    asyncio.run(reconcile(world.op, world.export(), body))
    written = _conditions(world.status())
    for type_ in ("SubscriptionReady", "PCEReachable"):
        if type_ in written or type_ in printed:
            assert printed[type_] == written[type_], type_
