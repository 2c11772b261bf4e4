"""`flowexport kube-sim`: run the Kubernetes API simulator on loopback until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from flowexport.commands.common import EXIT_OK, UsageError, require_simulators
from flowexport.urls import is_loopback_host


def add_parser(commands: Any) -> None:
    """Register the subcommand."""
    parser = commands.add_parser(
        "kube-sim",
        help="run a simulated Kubernetes API server on loopback (for tests and demos)",
        description=(
            "Serve the simulated API server until SIGINT/SIGTERM and write a kubeconfig for "
            "it. Once listening it prints one JSON line on stdout: url, kubeconfig and, for "
            "each --as-service-account, a kubeconfig that authenticates as that account (RBAC "
            "objects applied to the simulator then decide what it may do)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--kubeconfig", type=Path, help="where to write the kubeconfig")
    parser.add_argument(
        "--as-service-account",
        action="append",
        default=[],
        metavar="NAMESPACE/NAME",
        help="also write a kubeconfig for this ServiceAccount, subject to RBAC (repeatable)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    require_simulators()
    from flowexport.sim.kube import KubeSimulator, kubeconfig  # noqa: PLC0415 - only with the demo extra
    from flowexport.sim.kube.rbac import service_account_user  # noqa: PLC0415 - only with the demo extra
    from flowexport.sim.serve import serve_until_signalled  # noqa: PLC0415 - only with the demo extra

    if not is_loopback_host(args.host):
        raise UsageError("the simulator only binds loopback addresses (127.0.0.0/8, ::1)")
    accounts = [_account(text) for text in args.as_service_account]
    path = args.kubeconfig or Path(tempfile.mkdtemp(prefix="kube-sim-")) / "kubeconfig"
    sim = KubeSimulator()

    def on_ready(url: str) -> None:
        path.write_text(yaml.safe_dump(kubeconfig(url)))
        written = {}
        for namespace, name in accounts:
            account_path = path.with_name(f"{path.name}.{namespace}.{name}")
            token = sim.service_account_token(namespace, name)
            user = service_account_user(namespace, name)
            account_path.write_text(yaml.safe_dump(kubeconfig(url, token, as_user=user)))
            written[f"{namespace}/{name}"] = str(account_path)
        answer: dict[str, Any] = {"url": url, "kubeconfig": str(path)}
        if written:
            answer["service_accounts"] = written
        print(json.dumps(answer), flush=True)

    try:
        asyncio.run(serve_until_signalled(sim.app, args.host, args.port, None, on_ready))
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    return EXIT_OK


def _account(text: str) -> tuple[str, str]:
    namespace, _, name = text.partition("/")
    if not (namespace and name) or "/" in name:
        raise UsageError(f"--as-service-account wants NAMESPACE/NAME, not {text!r}")
    return namespace, name
