"""A real node beside kwok's fake ones: containerd v2, runc, the CNI bridge, a kubelet, kube-proxy
and CoreDNS, each a plain process on this machine, registered with a ControlPlane's API server.

Standard library only (scripts/dev-cluster.sh runs it with any python3). The binaries come from
`scripts/build-node.sh`. Only loopback and the node's own bridge carry traffic: pods get addresses
on a bridge and subnet of this node's own, with no masquerade to the outside, and the kubelet
serves on the bridge's address, which is also the node's InternalIP (the kubelet refuses a
loopback `--node-ip`: "failed to validate nodeIP: nodeIP can't be loopback address").

Two nodes (two test sessions) can run on one machine at once: each takes a *slot* (a file lock,
held for the node's life by a `sleep` process) that names its bridge, pod subnet, cgroup parent
and short runtime directory, and keeps its containerd root, kubelet root and logs in its own
state directory. What is truly machine-global is locked and waited for: kube-proxy writes the
host's `KUBE-*` iptables chains, which a second kube-proxy would overwrite, so one node at a time
runs kube-proxy (the lock `/run/lock/llmctl-node/kube-proxy`).

    node = RealNode(plane); node.up()            # after plane.up()
    node.import_image(Path("image.oci.tar"))     # ctr -n k8s.io images import
    node.down()                                  # stops exactly what up() started, unmounts
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.cluster.controlplane import ControlPlane

REPO = Path(__file__).resolve().parent.parent.parent
NODE_NAME = "llmctl-real-node"
# The real node carries this taint, so the scheduler keeps the tests' kwok-shaped workloads off it;
# a pod meant for it tolerates the taint and selects the node (kit.on_real_node).
REAL_NODE_TAINT = {"key": "llmctl.dev/real-node", "value": "true", "effect": "NoSchedule"}
REAL_NODE_LABEL = ("llmctl.dev/real-node", "true")
CLUSTER_DOMAIN = "cluster.local"
CLUSTER_DNS_IP = "10.96.0.10"
LOCK_DIR = Path("/run/lock/llmctl-node")
SLOTS = 32
KUBE_PROXY_LOCK_TIMEOUT_S = float(os.environ.get("LLMCTL_KUBE_PROXY_LOCK_TIMEOUT", "1200"))
CGROUP_ROOT = Path("/sys/fs/cgroup")


def log(message: str) -> None:
    print(f"node: {message}", file=sys.stderr, flush=True)


def built_node_binaries(*, build: bool = False) -> dict[str, str]:
    """The node's binaries and images, from scripts/build-node.sh (built only when `build`)."""
    from tests.cluster.controlplane import built_by

    return built_by("build-node.sh", build=build)


@dataclass(frozen=True)
class Slot:
    """What a node's slot number names: the machine-wide names two nodes must not share."""

    number: int

    @property
    def bridge(self) -> str:
        return f"llmctl-br{self.number}"

    @property
    def pod_subnet(self) -> str:
        return f"10.88.{self.number}.0/24"

    @property
    def gateway(self) -> str:
        """The bridge's address: the pods' default route, the node's InternalIP (where the kubelet
        serves) and where CoreDNS listens."""
        return f"10.88.{self.number}.1"

    @property
    def cgroup_parent(self) -> str:
        return f"llmctl-node-{self.number}"

    @property
    def run_dir(self) -> Path:
        """containerd's state and sockets: a short path, as unix socket paths must be."""
        return Path(f"/run/llmctl-node/{self.number}")

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd.sock"


def _hold_lock(
    path: Path, blocking: bool, timeout_s: float = 0.0
) -> subprocess.Popen[bytes] | None:
    """Take the flock on `path` and hand it to a `sleep infinity` process, which holds it until it
    is killed (or dies with the machine): the lock outlives this Python process, as the node does.
    None when the lock is taken (not blocking), or still taken after `timeout_s`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    announced = False
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not blocking or time.monotonic() > deadline:
                    return None
                if not announced:
                    handle.seek(0)
                    log(f"waiting for {path} (held by: {handle.read().strip() or '?'})")
                    announced = True
                time.sleep(1)
        holder = subprocess.Popen(
            ["sleep", "infinity"],
            pass_fds=(handle.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {holder.pid} for {os.getcwd()}\n")
        handle.flush()
    return holder


def _mounts_under(prefixes: list[Path]) -> list[str]:
    """Mount points under any of `prefixes`, deepest first (the order to unmount them)."""
    found: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == str(p) or point.startswith(f"{p}/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _cgroup_dirs(parent: str) -> list[Path]:
    """Every cgroup v1 hierarchy's directory for `parent` (and the unified one, if mounted)."""
    dirs = []
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        if (
            hierarchy.is_dir()
            and not hierarchy.is_symlink()
            and (hierarchy / "cgroup.procs").exists()
        ):
            dirs.append(hierarchy / parent)
    return dirs


@dataclass
class RealNode:
    """One real node of `plane`. Its processes are recorded in the plane's pids.json under
    `node-...` names, so `ControlPlane.down()` of a later invocation stops them too."""

    plane: ControlPlane
    bins: dict[str, str] = field(default_factory=dict)
    slot: Slot | None = None
    ports: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    locks: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.plane.state / "node"

    @property
    def name(self) -> str:
        return NODE_NAME

    @property
    def containerd_socket(self) -> Path:
        assert self.slot is not None
        return self.slot.containerd_socket

    # --- up ----------------------------------------------------------------------------------

    def up(self) -> None:
        """Start containerd, CoreDNS, kube-proxy and the kubelet; return once the node is Ready
        with the pause image imported and the cluster DNS Service in place."""
        from tests.cluster.controlplane import free_port

        began = time.monotonic()
        if not self.bins:
            self.bins = built_node_binaries(build=self.plane.build)
        self.state.mkdir(parents=True, exist_ok=True)
        self._take_slot()
        assert self.slot is not None
        self.ports = {
            name: free_port()
            for name in (
                "kubelet",
                "kubelet-healthz",
                "kube-proxy-healthz",
                "kube-proxy-metrics",
                "coredns-health",
                "coredns-ready",
            )
        }
        self._write_state()
        t = time.monotonic()
        self._make_certs()
        self._setup_network()
        self._start_containerd()
        self._step("containerd", t)
        t = time.monotonic()
        self.import_image(Path(self.bins["PAUSE_ARCHIVE"]))
        self._step("pause image", t)
        t = time.monotonic()
        self._apply_rbac_and_dns()
        self._start_coredns()
        self._step("CoreDNS", t)
        t = time.monotonic()
        self._start_kubelet()
        self._wait_ready()
        self._step("kubelet, node Ready", t)
        t = time.monotonic()
        # After the node exists: kube-proxy waits for its Node object before its first sync.
        self._start_kube_proxy()
        self._step("kube-proxy", t)
        self._step("node total", began)

    def _step(self, what: str, started: float) -> None:
        self.timings[what] = time.monotonic() - started
        log(f"{what}: {self.timings[what]:.1f}s")

    def _take_slot(self) -> None:
        for number in range(SLOTS):
            holder = _hold_lock(LOCK_DIR / f"slot-{number}", blocking=False)
            if holder is not None:
                self.slot = Slot(number)
                self._record("node-slot-lock", holder.pid)
                self.locks["slot"] = holder
                # A node of this slot that died without `down` may have left its bridge, mounts,
                # processes and cgroups behind: they are this slot's, so they go.
                self._clean_slot()
                return
        raise RuntimeError(f"all {SLOTS} real-node slots are taken ({LOCK_DIR}/slot-*)")

    def _record(self, name: str, pid: int) -> None:
        pids = self.plane._pids()
        pids[name] = pid
        (self.plane.state / "pids.json").write_text(json.dumps(pids))

    def _write_state(self) -> None:
        assert self.slot is not None
        (self.state / "node.json").write_text(
            json.dumps({"slot": self.slot.number, "ports": self.ports})
        )

    def _make_certs(self) -> None:
        """The kubelet's serving certificate (for this slot's address, so made anew each time) and
        the clients' certificates of the kubelet (a node's identity: group system:nodes) and
        kube-proxy (system:kube-proxy, which the API server's default RBAC binds to
        system:node-proxier), signed by the cluster CA."""
        from tests.cluster.controlplane import _openssl, kubeconfig_text

        pki = self.plane.pki
        assert self.slot is not None
        (pki / "kubelet-san.ext").write_text(
            f"subjectAltName=IP:{self.slot.gateway},IP:127.0.0.1,DNS:{self.name}\n"
            "extendedKeyUsage=serverAuth\n"
        )
        for name, subject, ext in (
            ("kubelet-serving", f"/CN={self.name}", ["-extfile", "kubelet-san.ext"]),
            ("kubelet-client", f"/O=system:nodes/CN=system:node:{self.name}", []),
            ("kube-proxy", "/CN=system:kube-proxy", []),
        ):
            if name != "kubelet-serving" and (pki / f"{name}.crt").exists():
                continue
            _openssl(
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                f"{name}.key",
                "-out",
                f"{name}.csr",
                "-subj",
                subject,
                cwd=pki,
            )
            _openssl(
                "x509",
                "-req",
                "-in",
                f"{name}.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                f"{name}.crt",
                "-days",
                "3650",
                *ext,
                cwd=pki,
            )
        base = kubeconfig_text(self.plane.server, pki)
        for user in ("kubelet-client", "kube-proxy"):
            text = base.replace(str(pki / "admin.crt"), str(pki / f"{user}.crt"))
            text = text.replace(str(pki / "admin.key"), str(pki / f"{user}.key"))
            (self.state / f"{user}.kubeconfig").write_text(text)

    def _setup_network(self) -> None:
        """The node's bridge, made before any pod so CoreDNS can listen on its address; the CNI
        bridge plugin takes it as it finds it. Pods reach the host (DNS) and each other, not the
        outside: no masquerade."""
        slot = self.slot
        assert slot is not None
        _run("ip", "link", "add", slot.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{slot.gateway}/24", "dev", slot.bridge)
        _run("ip", "link", "set", slot.bridge, "up")
        cni = self.state / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": f"llmctl-node-{slot.number}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": slot.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    # A pod reaching itself through its Service comes back over the bridge.
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": slot.pod_subnet, "gateway": slot.gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(cni / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (cni / "net.d" / "10-llmctl.conflist").write_text(json.dumps(conflist, indent=2))
        # The bridge plugin turns on IPv4 forwarding (machine-wide) as a gateway needs; the
        # cgroup parent the kubelet puts every pod under must exist in each hierarchy.
        for directory in _cgroup_dirs(slot.cgroup_parent):
            directory.mkdir(exist_ok=True)
            # A new cpuset cgroup (v1) has no CPUs or memory nodes, so no task could join it.
            for name in ("cpuset.cpus", "cpuset.mems"):
                inherited = directory.parent / name
                if inherited.exists() and not (directory / name).read_text().strip():
                    (directory / name).write_text(inherited.read_text())

    def _start_containerd(self) -> None:
        slot = self.slot
        assert slot is not None
        slot.run_dir.mkdir(parents=True, exist_ok=True)
        root = self.state / "containerd"
        root.mkdir(parents=True, exist_ok=True)
        config = self.state / "containerd.toml"
        config.write_text(
            containerd_config(
                root=root,
                run_dir=slot.run_dir,
                runc=self.bins["RUNC"],
                cni_bin=self.bins["CNI_BIN"],
                cni_conf=self.state / "cni" / "net.d",
                pause_image=self.bins["PAUSE_IMAGE"],
            )
        )
        # The runc shim is found on PATH (containerd starts `containerd-shim-runc-v2`).
        path = f"{self.bins['CONTAINERD_BIN']}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        self.plane._spawn(
            "node-containerd",
            [f"{self.bins['CONTAINERD_BIN']}/containerd", f"--config={config}"],
            env={"PATH": path},
        )
        deadline = time.monotonic() + 60
        while self._ctr("version", check=False).returncode != 0:
            if not self.plane._alive("node-containerd") or time.monotonic() > deadline:
                raise RuntimeError(
                    f"containerd did not start:\n{self.plane._tail('node-containerd')}"
                )
            time.sleep(0.2)

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [
                f"{self.bins['CONTAINERD_BIN']}/ctr",
                f"--address={self.containerd_socket}",
                "--namespace=k8s.io",
                *args,
            ],
            capture_output=True,
            text=True,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed:\n{done.stderr}")
        return done

    def import_image(self, archive: Path) -> list[str]:
        """Import an OCI (or docker) image archive into the node's containerd, where the kubelet
        finds it: `ctr -n k8s.io images import`. Returns the image names it now has."""
        if not archive.is_file():
            raise FileNotFoundError(f"no image archive at {archive}")
        before = set(self.images())
        self._ctr("images", "import", "--platform=linux/amd64", str(archive))
        return sorted(set(self.images()) - before) or self.images()

    def images(self) -> list[str]:
        out = self._ctr("images", "list", "--quiet").stdout
        return [line for line in out.splitlines() if line and not line.startswith("sha256:")]

    def _apply_rbac_and_dns(self) -> None:
        """The node's identity gets the system:node role (this API server authorizes with RBAC
        alone, not the Node authorizer), and the cluster DNS is the usual kube-dns Service whose
        endpoint is CoreDNS on the node's bridge address (CoreDNS runs as a process on the host,
        like the rest of the control plane)."""
        slot = self.slot
        assert slot is not None
        objects = [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "llmctl-system-nodes"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:node",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Group",
                        "name": "system:nodes",
                    }
                ],
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "kube-dns",
                    "namespace": "kube-system",
                    "labels": {"k8s-app": "kube-dns"},
                },
                "spec": {
                    "clusterIP": CLUSTER_DNS_IP,
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    ],
                },
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kube-dns-coredns",
                    "namespace": "kube-system",
                    "labels": {
                        "kubernetes.io/service-name": "kube-dns",
                        "endpointslice.kubernetes.io/managed-by": "llmctl-tests",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [slot.gateway], "conditions": {"ready": True}}],
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        ]
        doc = {"apiVersion": "v1", "kind": "List", "items": objects}
        self.plane.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=llmctl-node",
            "-f",
            "-",
            input_text=json.dumps(doc),
        )

    def _start_coredns(self) -> None:
        slot = self.slot
        assert slot is not None
        corefile = self.state / "Corefile"
        corefile.write_text(
            f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {slot.gateway}
    errors
    health 127.0.0.1:{self.ports["coredns-health"]}
    ready 127.0.0.1:{self.ports["coredns-ready"]}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.plane.kubeconfig} llmctl-dev
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loadbalance
}}
"""
        )
        self.plane._spawn("node-coredns", [self.bins["COREDNS"], "-conf", str(corefile)])
        self.plane._wait("node-coredns", [f"http://127.0.0.1:{self.ports['coredns-ready']}/ready"])

    def _start_kube_proxy(self) -> None:
        """kube-proxy in iptables mode (Debian's iptables 1.8.9, nf_tables backend). Its chains
        are the machine's: it starts only while holding the kube-proxy lock."""
        slot = self.slot
        assert slot is not None
        holder = _hold_lock(
            LOCK_DIR / "kube-proxy", blocking=True, timeout_s=KUBE_PROXY_LOCK_TIMEOUT_S
        )
        if holder is None:
            raise RuntimeError(
                f"another real node kept {LOCK_DIR / 'kube-proxy'} for "
                f"{KUBE_PROXY_LOCK_TIMEOUT_S:.0f}s (LLMCTL_KUBE_PROXY_LOCK_TIMEOUT)"
            )
        self.locks["kube-proxy"] = holder
        self._record("node-kube-proxy-lock", holder.pid)
        config = self.state / "kube-proxy.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "clientConnection": {"kubeconfig": str(self.state / "kube-proxy.kubeconfig")},
                    "mode": "iptables",
                    "hostnameOverride": self.name,
                    "bindAddress": "127.0.0.1",
                    "healthzBindAddress": f"127.0.0.1:{self.ports['kube-proxy-healthz']}",
                    "metricsBindAddress": f"127.0.0.1:{self.ports['kube-proxy-metrics']}",
                    "clusterCIDR": slot.pod_subnet,
                    "detectLocalMode": "ClusterCIDR",
                    # Service traffic leaves with the bridge's address, so a backend on the same
                    # bridge answers through the host (and its conntrack), not straight back.
                    # No NodePorts on 127.0.0.1: that would set route_localnet machine-wide.
                    "iptables": {
                        "masqueradeAll": True,
                        "localhostNodePorts": False,
                        "syncPeriod": "30s",
                        "minSyncPeriod": "0s",
                    },
                    # NodePorts only on the node's bridge: nothing opens on the machine's eth0.
                    "nodePortAddresses": [f"{slot.gateway}/32"],
                    # Leave the machine's conntrack sysctls as they are.
                    "conntrack": {
                        "maxPerCore": 0,
                        "min": 0,
                        "tcpEstablishedTimeout": "0s",
                        "tcpCloseWaitTimeout": "0s",
                    },
                },
                indent=2,
            )
        )
        self.plane._spawn(
            "node-kube-proxy", [self.bins["KUBE_PROXY"], f"--config={config}", "--v=1"]
        )
        self.plane._wait(
            "node-kube-proxy", [f"http://127.0.0.1:{self.ports['kube-proxy-healthz']}/livez"]
        )

    def _start_kubelet(self) -> None:
        slot = self.slot
        assert slot is not None
        root = self.state / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        pki = self.plane.pki
        resolv = self.state / "resolv.conf"
        # Pods of dnsPolicy Default get no resolver of the machine's: nothing outside is reached.
        resolv.write_text("options ndots:1\n")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": slot.gateway,
            "port": self.ports["kubelet"],
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.ports["kubelet-healthz"],
            "tlsCertFile": str(pki / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
            "authentication": {
                "x509": {"clientCAFile": str(pki / "ca.crt")},
                "webhook": {"enabled": True},
                "anonymous": {"enabled": False},
            },
            "authorization": {"mode": "Webhook"},
            # This machine mounts cgroup v1 (hybrid): Kubernetes 1.35+ refuses it unless told.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{slot.cgroup_parent}",
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{slot.containerd_socket}",
            "clusterDNS": [CLUSTER_DNS_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(resolv),
            "podLogsDir": str(self.state / "pod-logs"),
            "volumePluginDir": str(self.state / "volume-plugins"),
            # The images are imported, not pulled: never collect them, and do not evict or taint
            # the node for a shared machine's disk use.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "serializeImagePulls": False,
            "registerWithTaints": [REAL_NODE_TAINT],
            "maxPods": 30,
        }
        config_path = self.state / "kubelet.yaml"
        config_path.write_text(json.dumps(config, indent=2))
        key, value = REAL_NODE_LABEL
        self.plane._spawn(
            "node-kubelet",
            [
                self.bins["KUBELET"],
                f"--config={config_path}",
                f"--kubeconfig={self.state / 'kubelet-client.kubeconfig'}",
                f"--root-dir={root}",
                f"--cert-dir={root / 'pki'}",
                f"--node-ip={slot.gateway}",
                f"--hostname-override={self.name}",
                f"--node-labels={key}={value}",
                "--v=1",
            ],
        )

    def _wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            for name in ("node-containerd", "node-kubelet", "node-coredns"):
                if not self.plane._alive(name):
                    raise RuntimeError(f"{name} exited during start:\n{self.plane._tail(name)}")
            out = self.plane.kubectl(
                "get",
                "node",
                self.name,
                "--ignore-not-found",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            )
            if out.strip() == "True":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"node {self.name} not Ready after {timeout_s:.0f}s:\n"
                    + self.plane._tail("node-kubelet")
                )
            time.sleep(0.3)

    def check_alive(self) -> None:
        for name in ("node-containerd", "node-kubelet", "node-kube-proxy", "node-coredns"):
            if not self.plane._alive(name):
                raise RuntimeError(f"{name} has exited:\n{self.plane._tail(name)}")

    # --- down --------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop what up() started, then remove what it and its pods left on the machine: the pods'
        processes (by the node's cgroup parent), the runc shims (by this node's containerd
        socket), mounts under the node's directories, the bridge, the cgroups, kube-proxy's
        iptables chains; last, release the locks."""
        if self.slot is None:
            saved = self.state / "node.json"
            if not saved.exists():
                return
            self.slot = Slot(int(json.loads(saved.read_text())["slot"]))
        if not self.bins:
            self.bins = built_node_binaries(build=self.plane.build)
        pids = self.plane._pids()
        for name in ("node-kubelet", "node-kube-proxy", "node-coredns"):
            self._stop(name, pids.get(name))
        if "node-kube-proxy-lock" in pids:
            # Its chains go while this node still holds the lock (no other kube-proxy wrote them).
            subprocess.run([self.bins["KUBE_PROXY"], "--cleanup"], capture_output=True, check=False)
        self._kill_pods()
        self._stop("node-containerd", pids.get("node-containerd"))
        self._clean_slot()
        for name in ("node-kube-proxy-lock", "node-slot-lock"):
            self._stop(name, pids.get(name))
        self.locks.clear()
        (self.state / "node.json").unlink(missing_ok=True)

    def _stop(self, name: str, pid: int | None) -> None:
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        proc = self.plane.procs.get(name) or self.locks.get(
            name.removeprefix("node-").removesuffix("-lock")
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _running(pid, proc):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait()
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.plane.procs.pop(name, None)
        pids = self.plane._pids()
        pids.pop(name, None)
        (self.plane.state / "pids.json").write_text(json.dumps(pids))

    def _kill_pods(self) -> None:
        """SIGKILL every process in the node's cgroup parent (the pods' containers and sandboxes,
        whatever became of their shims), until none is left."""
        assert self.slot is not None
        deadline = time.monotonic() + 30
        while True:
            pids = _pids_in_cgroups(_cgroup_dirs(self.slot.cgroup_parent))
            if not pids or time.monotonic() > deadline:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _clean_slot(self) -> None:
        """Remove what a node of this slot leaves on the machine (none of it is shared)."""
        slot = self.slot
        assert slot is not None
        self._kill_pods()
        address = str(slot.containerd_socket)
        for pid in _pids_with_arg(address):  # runc shims of this node's containerd
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for point in _mounts_under([slot.run_dir, self.state]):
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", slot.bridge], capture_output=True, check=False)
        for directory in _cgroup_dirs(slot.cgroup_parent):
            _remove_cgroup(directory)
        subprocess.run(["rm", "-rf", str(slot.run_dir)], check=False)


def containerd_config(
    *, root: Path, run_dir: Path, runc: str, cni_bin: str, cni_conf: Path, pause_image: str
) -> str:
    """containerd 2.x's configuration (version 4, containerd 2.2's and later) for one node: its
    own root, state, sockets and streaming port, the CRI plugin with runc under cgroupfs and the
    node's CNI network."""
    return f"""version = 4
# Nothing from the machine's /etc/containerd/conf.d.
imports = []
root = "{root}"
state = "{run_dir / "state"}"
disabled_plugins = ["io.containerd.nri.v1.nri"]

[debug]
  level = "info"

# Version 4 configures the servers as plugins; left out, they take the machine's
# /run/containerd/containerd.sock.
[plugins."io.containerd.server.v1.grpc"]
  address = "{run_dir / "containerd.sock"}"

[plugins."io.containerd.server.v1.ttrpc"]
  address = "{run_dir / "containerd.sock.ttrpc"}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"

  [plugins."io.containerd.cri.v1.images".pinned_images]
    # No registry is reachable: the sandbox image is the one imported at start.
    sandbox = "{pause_image}"

[plugins."io.containerd.cri.v1.runtime"]
  # root here lacks CAP_SYS_RESOURCE: runc may only raise a container's oom_score_adj.
  restrict_oom_score_adj = true
  # Pod network namespaces under this node's state, not the machine's /run/netns.
  netns_mounts_under_state_dir = true
  enable_selinux = false

  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"

    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false

  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"
    max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri"]
  # exec, attach and port-forward streams: on loopback, on a port of this node's own.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def _running(pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None:
        return proc.poll() is None
    from tests.cluster.controlplane import _running as running

    return running(pid)


def _pids_in_cgroups(dirs: list[Path]) -> set[int]:
    pids: set[int] = set()
    for directory in dirs:
        if not directory.is_dir():
            continue
        for procs in directory.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def _pids_with_arg(arg: str) -> list[int]:
    """Processes whose command line has `arg` as one of its arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if arg in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0"):
                found.append(int(entry.name))
    return found


def _remove_cgroup(directory: Path) -> None:
    """rmdir a cgroup and its children, deepest first (a cgroup's files cannot be unlinked)."""
    if not directory.is_dir():
        return
    children = sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: len(p.parts))
    for child in reversed(children):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        directory.rmdir()
