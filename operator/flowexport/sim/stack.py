"""The product's stand-ins on loopback, as one stack: for `flowexport demo` and the e2e tests.

`LoopbackStack.running(workdir)` starts moto (AWS), the PCE simulator (HTTPS, its own CA) and
the Kubernetes API simulator, each on a port free at run time (or takes a moto or PCE already
running), writes `workdir/kubeconfig` for the simulator and keeps an admin client to it. Then
`install` applies the CRD, a namespace and Secrets, `create_vpc_and_role` prepares AWS, and
`operator` makes the real operator (`flowexport run`, an `OperatorProcess`). Every start and
stop is bounded by a timeout; leaving the block stops what the stack started, operators first.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import yaml

from flowexport.api.crd import CRDS, FLOWEXPORT_CRD, build_crd
from flowexport.aws.session import AwsKeys
from flowexport.secrets import SECRET_TYPE_LABEL, SecretKind
from flowexport.sim.kube import ADMIN_TOKEN, KubeSimulator, kubeconfig
from flowexport.sim.moto import moto_server, reset
from flowexport.sim.operator_process import OperatorProcess
from flowexport.sim.pce import PCESimConfig, PCESimulator
from flowexport.sim.serve import ServerThread
from flowexport.sim.tls import make_loopback_tls
from flowexport.urls import endpoint_of, host_port_text

REGION = "us-east-1"
#: What moto accepts from anyone; the demo's AWS credentials.
DEMO_KEYS = AwsKeys("demo", "demo")
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
#: The HTTP timeout of the admin client to the Kubernetes simulator.
KUBE_TIMEOUT = 30.0

Flow = tuple[str, str, int, int]


@dataclass
class PCEStandIn:
    """A PCE simulator being served: its URL, the simulator, the thread serving it, an API
    key and secret it accepts, and the CA of its certificate (PEM; empty over plain HTTP)."""

    url: str
    sim: PCESimulator
    server: ServerThread
    key: str
    secret: str
    ca_pem: str = ""

    def credentials(self) -> dict[str, str]:
        """The API key as a PCE credentials Secret holds it."""
        return {"username": self.key, "password": self.secret}

    def flows(self) -> list[Flow]:
        """The flows the PCE has received so far (read on the simulator's own loop)."""
        flows: list[Flow] = self.server.call(lambda: list(self.sim.state.flows))
        return flows

    def workloads(self) -> list[dict[str, Any]]:
        """The workloads the PCE holds, each with its labels as `key=value` texts."""

        def read() -> list[dict[str, Any]]:
            labels = {x["href"]: f"{x['key']}={x['value']}" for x in self.sim.state.labels.values()}
            return [
                {**w, "label_texts": sorted(labels.get(x["href"], "?") for x in w["labels"])}
                for w in self.sim.state.workloads.values()
            ]

        found: list[dict[str, Any]] = self.server.call(read)
        return found


@contextlib.contextmanager
def https_pce(common_name: str = "flowexport demo PCE") -> Iterator[PCEStandIn]:
    """The PCE simulator over HTTPS with a fresh CA and a random API key; always stopped."""
    tls = make_loopback_tls(common_name)
    key, secret = f"api_{secrets.token_hex(6)}", secrets.token_urlsafe(18)
    sim = PCESimulator(PCESimConfig(api_keys={key: secret}))
    server = ServerThread(sim.app, ssl_context=tls.server_context())
    url = server.start()
    try:
        yield PCEStandIn(url, sim, server, key, secret, tls.ca_pem)
    finally:
        server.stop()


@dataclass
class LoopbackStack:
    """moto, a PCE and the Kubernetes API simulator, running; `kube` is an admin client."""

    workdir: Path
    moto_url: str
    pce: PCEStandIn
    sim: KubeSimulator
    kube_url: str
    kube: httpx.Client
    aws_keys: AwsKeys = DEMO_KEYS
    region: str = REGION
    operators: list[OperatorProcess] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        workdir: Path,
        *,
        moto_url: str | None = None,
        pce: PCEStandIn | None = None,
        aws_keys: AwsKeys = DEMO_KEYS,
        region: str = REGION,
    ) -> Iterator[LoopbackStack]:
        """Start what is not given (a moto that is given is reset instead), yield the stack,
        then stop the stack's operators, the Kubernetes simulator and what it started."""
        with contextlib.ExitStack() as started:
            if moto_url is None:
                moto_url = started.enter_context(moto_server())
            else:
                reset(moto_url)
            if pce is None:
                pce = started.enter_context(https_pce())
            sim = KubeSimulator()
            kube_server = ServerThread(sim.app)
            kube_url = kube_server.start()
            started.callback(kube_server.stop)
            kube = started.enter_context(httpx.Client(base_url=kube_url, timeout=KUBE_TIMEOUT))
            stack = cls(workdir, moto_url, pce, sim, kube_url, kube, aws_keys, region)
            started.callback(stack.stop_operators)
            stack.write_kubeconfig(stack.kubeconfig)
            yield stack

    @property
    def kubeconfig(self) -> Path:
        """The simulator's admin kubeconfig (unrestricted)."""
        return self.workdir / "kubeconfig"

    def write_kubeconfig(self, path: Path, token: str = ADMIN_TOKEN) -> Path:
        """Write a kubeconfig for the simulator that authenticates with `token`; returns it."""
        path.write_text(yaml.safe_dump(kubeconfig(self.kube_url, token)))
        return path

    def aws(self, service: str) -> Any:
        """A boto3 client of moto."""
        return boto3.client(
            service,
            endpoint_url=self.moto_url,
            region_name=self.region,
            aws_access_key_id=self.aws_keys.access_key_id,
            aws_secret_access_key=self.aws_keys.secret_access_key,
        )

    def aws_credentials(self) -> dict[str, str]:
        """The AWS keys as an AWS credentials Secret holds them."""
        return {
            "aws_access_key_id": self.aws_keys.access_key_id,
            "aws_secret_access_key": self.aws_keys.secret_access_key,
        }

    def install(
        self,
        namespace: str,
        secrets: Mapping[str, tuple[SecretKind, Mapping[str, str]]],
        crd: dict[str, Any] | None = None,
    ) -> None:
        """Create the FlowExport CRD (`build_crd()` unless given) and the project's other CRDs
        (AccountGrant), `namespace`, and in it a Secret per entry of `secrets` (name -> its use
        and `stringData`), labelled for the operator with its use; RuntimeError if one is
        refused."""
        self.create(CRD_PATH, crd if crd is not None else build_crd())
        for definition in CRDS:
            if definition is not FLOWEXPORT_CRD:
                self.create(CRD_PATH, build_crd(definition))
        self.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
        for name, (kind, data) in secrets.items():
            metadata = {"name": name, "labels": {SECRET_TYPE_LABEL: str(kind)}}
            self.create(
                f"/api/v1/namespaces/{namespace}/secrets",
                {"metadata": metadata, "stringData": dict(data)},
            )

    def create(self, path: str, body: dict[str, Any]) -> None:
        """POST `body` to the simulator as the admin; RuntimeError if it is refused."""
        answer = self.kube.post(path, json=body)
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"the Kubernetes simulator refused a set-up request: {answer.text}")

    def create_vpc_and_role(self, role_name: str) -> tuple[str, str]:
        """A new VPC and a flow-log delivery role in moto: (VPC id, role ARN)."""
        vpc = self.aws("ec2").create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        role = self.aws("iam").create_role(RoleName=role_name, AssumeRolePolicyDocument="{}")
        return str(vpc), str(role["Role"]["Arn"])

    def allow_pce(self) -> list[str]:
        """The `flowexport run` arguments that let the operator send the PCE its API key."""
        return ["--allowed-pce-host", host_port_text(endpoint_of(self.pce.url))]

    def operator(
        self,
        namespace: str | None,
        args: Sequence[str] = (),
        kubeconfig: Path | None = None,
        allow_pce: bool = True,
    ) -> OperatorProcess:
        """The operator (not yet started) with the admin kubeconfig unless told otherwise,
        logging to `workdir/operator.log`, allowed to send the PCE its key unless told not to;
        the stack stops it at the end."""
        process = OperatorProcess(
            kubeconfig or self.kubeconfig,
            self.workdir / "operator.log",
            namespace,
            [*(self.allow_pce() if allow_pce else []), *args],
        )
        self.operators.append(process)
        return process

    def stop_operators(self) -> None:
        """Stop every operator made by `operator` (SIGTERM, killed if it hangs)."""
        for process in self.operators:
            process.stop()
