"""A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver and (when built)
kube-controller-manager, from the binaries `make kube-bin` builds (hack/kube-bin.sh).

`ControlPlane.running(bin_dir)` starts etcd and kube-apiserver on ports free at run time, with
a fresh CA and serving certificate, a service-account signing key, an admin bearer token
(user `admin` in `system:masters`, through `--token-auth-file`), RBAC authorization and the
default admission plugins; then kube-controller-manager with the namespace and garbage
collector controllers. It waits for `/readyz`, and on the way out stops every process group
(SIGTERM, SIGKILL after a timeout) and removes its temporary directory. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from flowexport.sim.moto import free_ports

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "kube-bin.sh"
BINARIES = ("etcd", "kube-apiserver")
#: Bounds on every wait, in seconds.
START_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0


def find_binaries() -> tuple[Path | None, str]:
    """The directory holding etcd and kube-apiserver, or None and why not (one line)."""
    given = os.environ.get("FLOWEXPORT_KUBE_BIN")
    if given:
        path = Path(given)
        missing = [b for b in BINARIES if not (path / b).is_file()]
        if missing:
            return None, f"FLOWEXPORT_KUBE_BIN={given} lacks {', '.join(missing)}"
        return path, ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = subprocess.run(
            ["bash", str(SCRIPT), "--print"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if found.returncode == 0 and found.stdout.strip():
            return Path(found.stdout.strip().splitlines()[-1]), ""
    if shutil.which("go") is None:
        return (
            None,
            "no kube-apiserver/etcd built and no Go toolchain to build them (make kube-bin)",
        )
    return (
        None,
        "kube-apiserver/etcd not built yet: run `make kube-bin` (a cold build takes ~30 min)",
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_pki(directory: Path) -> dict[str, Path]:
    """A CA, a serving certificate for 127.0.0.1/localhost signed by it, and the service
    account signing key (RSA, as kube-apiserver expects); file paths by role."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("flowexport-test-ca"))
        .issuer_name(_name("flowexport-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("kube-apiserver"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca": cert_file(directory / "ca.crt", ca),
        "cert": cert_file(directory / "apiserver.crt", cert),
        "key": directory / "apiserver.key",
        "sa-key": directory / "sa.key",
        "sa-pub": directory / "sa.pub",
    }
    files["key"].write_bytes(_pem_key(key))
    files["sa-key"].write_bytes(_pem_key(sa_key))
    files["sa-pub"].write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return files


def cert_file(path: Path, cert: x509.Certificate) -> Path:
    """Write `cert` as PEM to `path`; returns the path."""
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass
class Process:
    """A started server process in its own process group, logging to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        """The last lines of its log."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the whole group, SIGKILL if it is still there after `timeout`."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        # anything the group left behind
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


def start(name: str, argv: Sequence[str], workdir: Path) -> Process:
    """Start `argv` in a new session (its own process group), output to `workdir/NAME.log`."""
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            start_new_session=True,
        )
    return Process(name, popen, log)


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver (+ kube-controller-manager): its URL, CA, admin token
    and an admin kubeconfig file (`kubeconfig`)."""

    url: str
    ca: Path
    token: str
    workdir: Path
    processes: list[Process] = field(default_factory=list)
    controller_manager: bool = False

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user `admin`, group `system:masters`)."""
        return self.workdir / "admin.kubeconfig"

    def write_kubeconfig(self, path: Path, token: str, namespace: str = "default") -> Path:
        """A kubeconfig for this server authenticating with `token`; returns `path`."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "real",
            "clusters": [
                {
                    "name": "real",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca)},
                }
            ],
            "users": [{"name": "real", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "real",
                    "context": {"cluster": "real", "user": "real", "namespace": namespace},
                }
            ],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def client(self, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        """An HTTP client to the API server (admin unless another token is given)."""
        return httpx.Client(
            base_url=self.url,
            verify=ssl.create_default_context(cafile=str(self.ca)),
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=timeout,
        )

    def logs(self) -> str:
        """The tails of every process's log (for a failure's message)."""
        return "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in self.processes)

    @classmethod
    @contextlib.contextmanager
    def running(cls, bin_dir: Path, keep_logs: Path | None = None) -> Iterator[ControlPlane]:
        """Start the control plane from `bin_dir`; always stopped and cleaned up after."""
        workdir = Path(tempfile.mkdtemp(prefix="flowexport-kube-"))
        plane: ControlPlane | None = None
        try:
            pki = write_pki(workdir)
            token = secrets.token_hex(16)
            (workdir / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
            etcd_client, etcd_peer, secure = free_ports(3)
            url = f"https://127.0.0.1:{secure}"
            plane = cls(url, pki["ca"], token, workdir)
            etcd_url = f"http://127.0.0.1:{etcd_client}"
            plane.processes.append(
                start(
                    "etcd",
                    [
                        str(bin_dir / "etcd"),
                        "--name=flowexport-test",
                        f"--data-dir={workdir / 'etcd'}",
                        f"--listen-client-urls={etcd_url}",
                        f"--advertise-client-urls={etcd_url}",
                        f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                        f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                        f"--initial-cluster=flowexport-test=http://127.0.0.1:{etcd_peer}",
                        "--unsafe-no-fsync=true",
                        "--log-level=warn",
                    ],
                    workdir,
                )
            )
            _wait(lambda: _etcd_healthy(etcd_url), plane, "etcd /health")
            plane.processes.append(
                start(
                    "kube-apiserver",
                    [
                        str(bin_dir / "kube-apiserver"),
                        f"--etcd-servers={etcd_url}",
                        "--bind-address=127.0.0.1",
                        "--advertise-address=127.0.0.1",
                        f"--secure-port={secure}",
                        f"--cert-dir={workdir / 'certs'}",
                        f"--tls-cert-file={pki['cert']}",
                        f"--tls-private-key-file={pki['key']}",
                        f"--token-auth-file={workdir / 'tokens.csv'}",
                        "--authorization-mode=RBAC",
                        "--anonymous-auth=false",
                        f"--service-account-key-file={pki['sa-pub']}",
                        f"--service-account-signing-key-file={pki['sa-key']}",
                        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                        "--api-audiences=https://kubernetes.default.svc.cluster.local",
                        "--service-cluster-ip-range=10.0.0.0/24",
                        "--endpoint-reconciler-type=none",
                        "--allow-privileged=true",
                        "--v=1",
                    ],
                    workdir,
                )
            )
            with plane.client(timeout=5) as admin:
                _wait(lambda: _ready(admin), plane, "kube-apiserver /readyz")
            plane.write_kubeconfig(plane.kubeconfig, token)
            manager = bin_dir / "kube-controller-manager"
            if manager.is_file():
                plane.processes.append(
                    start(
                        "kube-controller-manager",
                        [
                            str(manager),
                            f"--kubeconfig={plane.kubeconfig}",
                            "--controllers=namespace-controller,garbage-collector-controller",
                            "--leader-elect=false",
                            "--secure-port=0",
                            "--use-service-account-credentials=false",
                            "--concurrent-namespace-syncs=2",
                            "--v=1",
                        ],
                        workdir,
                    )
                )
                plane.controller_manager = True
                # no health endpoint without a serving port: a bad flag shows as an early exit
                time.sleep(2)
                _wait(lambda: True, plane, "kube-controller-manager to start")
            yield plane
        finally:
            if plane is not None:
                for process in reversed(plane.processes):
                    process.stop()
                if keep_logs is not None:
                    keep_logs.mkdir(parents=True, exist_ok=True)
                    for process in plane.processes:
                        with contextlib.suppress(OSError):
                            shutil.copy(process.log, keep_logs / process.log.name)
            shutil.rmtree(workdir, ignore_errors=True)


def _etcd_healthy(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/health", timeout=2).json().get("health") == "true"
    return False


def _ready(admin: httpx.Client) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return admin.get("/readyz").status_code == 200
    return False


def _wait(check: Any, plane: ControlPlane, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in plane.processes:
            if process.popen.poll() is not None:
                raise RuntimeError(
                    f"{process.name} exited while waiting for {what}:\n{plane.logs()}"
                )
        if check():
            return
        time.sleep(0.25)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n{plane.logs()}")
