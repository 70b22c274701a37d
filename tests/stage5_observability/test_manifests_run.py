"""The Kubernetes manifests, run: no cluster can run here, so each Deployment of the rendered
dev overlay is started natively, the way the kubelet would start its container: the command and
args the manifest says, the environment it builds (envFrom the ConfigMap and the Secret, then
env, with the downward API's pod name and IP), the ConfigMap's files where the manifest mounts
them. Only what must differ on one machine is rewritten: the in-cluster service names become
this test's native Redis, ZooKeeper, Kafka, PostgreSQL and VictoriaLogs, each `0.0.0.0:PORT` a
role serves on becomes a free loopback port, and the test gets its own ZooKeeper chroot and
Kafka topic prefix.

The archiver writes to this test's own database on the session's native PostgreSQL (the dev
Secret's ARCHIVE_DSN, rewritten), and every role ships its log lines to the native VictoriaLogs
(the endpoints' LOGS_URL, rewritten).

Then every role must become ready on the port and path its readinessProbe declares, and alive
on its livenessProbe's: a manifest whose probe, port, env or command drifts from the code fails
here. Roles are read from the manifests, so a new Deployment is covered without a change here.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from base64 import b64decode
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from common.testing import eventually
from common.testing.processes import RoleProcess, stop_all
from common.testing.pytest_plugin import unavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "deploy" / "kubernetes" / "overlays" / "dev"
TASKLAB = Path(sys.executable).with_name("tasklab")
READY_TIMEOUT = 180.0


def render() -> list[dict]:
    kubectl = shutil.which("kubectl") or "/usr/bin/kubectl"
    if not Path(kubectl).exists():
        unavailable("kubectl not found: its `kubectl kustomize` renders the manifests")
    proc = subprocess.run(
        [kubectl, "kustomize", str(DEV)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pod(RoleProcess):
    """A Deployment's container as a native process: its own argv and exactly the environment
    the manifest gives it (plus PATH), not the test runner's."""

    def __init__(self, argv: list[str], env: dict[str, str], log_dir: Path, name: str) -> None:
        super().__init__(argv[2] if len(argv) > 2 else argv[1], 5, {}, log_dir, name)
        self.argv = argv
        self.env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env}

    def start(self) -> Pod:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self


class Cluster:
    """What the kubelet would resolve for a pod: ConfigMaps, Secrets and the rewrites."""

    def __init__(self, docs: list[dict], tmp: Path, rewrites: dict[str, str]) -> None:
        self.docs = docs
        self.tmp = tmp
        self.rewrites = rewrites
        self.config_maps = {
            d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"
        }
        self.secrets = {
            d["metadata"]["name"]: {k: b64decode(v).decode() for k, v in d["data"].items()}
            for d in docs
            if d["kind"] == "Secret"
        }
        self.used: set[str] = set()

    def rewrite(self, value: str) -> str:
        for old, new in self.rewrites.items():
            if old in value:
                self.used.add(old)
                value = value.replace(old, new)
        return value

    def pod(self, deployment: dict, index: int) -> tuple[list[str], dict[str, str], dict]:
        """(argv, env, ports) of replica `index`: ports maps a probe's port (name or number) to
        the loopback port the native process really serves it on."""
        name = f"{deployment['metadata']['name']}-smoke-{index}"
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        mounts = self._mount_config_maps(spec, container, name)
        served = {p["containerPort"]: free_port() for p in container.get("ports", [])}
        env: dict[str, str] = {"HOSTNAME": name}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.config_maps[source["configMapRef"]["name"]])
            if "secretRef" in source:
                env.update(self.secrets[source["secretRef"]["name"]])
        for item in container.get("env", []):
            env[item["name"]] = self._value(item, name)
        for key, value in env.items():
            for mount_path, local in mounts.items():
                if value == mount_path:
                    value = str(local)
            listen = re.fullmatch(r"0\.0\.0\.0:(\d+)", value)
            if listen:
                # A pod serves on every interface of its own network namespace; here, each
                # process on its own loopback port.
                value = f"127.0.0.1:{served[int(listen.group(1))]}"
            env[key] = self.rewrite(value)
        ports = {}
        for p in container.get("ports", []):
            ports[p["name"]] = ports[p["containerPort"]] = served[p["containerPort"]]
        command = [*container["command"], *container.get("args", [])]
        assert command[0] == "tasklab", command
        return [str(TASKLAB), *command[1:]], env, ports

    def _value(self, item: dict, pod_name: str) -> str:
        if "value" in item:
            return str(item["value"])
        source = item["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            return {"metadata.name": pod_name, "status.podIP": "127.0.0.1"}[path]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return self.config_maps[ref["name"]][ref["key"]]
        ref = source["secretKeyRef"]
        return self.secrets[ref["name"]][ref["key"]]

    def _mount_config_maps(self, spec: dict, container: dict, pod_name: str) -> dict[str, Path]:
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "configMap" not in volume:
                continue  # an emptyDir: the process's own /tmp serves
            local = self.tmp / pod_name / mount["name"]
            local.mkdir(parents=True)
            for key, text in self.config_maps[volume["configMap"]["name"]].items():
                (local / key).write_text(text)
            mounts[mount["mountPath"]] = local
        return mounts


def probe_answers(port: int, path: str) -> bool:
    """True once the probe would pass; an AssertionError naming what it said until then."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5.0)
    except httpx.TransportError as exc:
        raise AssertionError(f"no answer on port {port}: {exc}") from None
    assert response.status_code == 200, f"{response.status_code} {response.text[:600]}"
    return True


@pytest.fixture
def cluster(
    tmp_path, redis_url, zookeeper_service, zk, kafka_service, archive_dsn, victorialogs_service
) -> Cluster:
    docs = render()
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    (secret,) = [d for d in docs if d["kind"] == "Secret" and "ARCHIVE_DSN" in d.get("data", {})]
    # The dev overlay's in-cluster names -> this test's native services. Each is asserted to
    # be used, so a renamed service in the manifests fails here instead of going unnoticed.
    zk_hosts = zookeeper_service.env["TASKLAB_ZK_HOSTS"]
    bootstrap = kafka_service.env["TASKLAB_KAFKA_BOOTSTRAP"]
    rewrites = {
        f"redis://redis:{services['redis']['spec']['ports'][0]['port']}/0": redis_url,
        f"zookeeper:{services['zookeeper']['spec']['ports'][0]['port']}": zk_hosts,
        f"kafka:{services['kafka']['spec']['ports'][0]['port']}": bootstrap,
        # The whole DSN: the dev password means nothing to this test's PostgreSQL.
        b64decode(secret["data"]["ARCHIVE_DSN"]).decode(): archive_dsn,
        f"http://victorialogs:{services['victorialogs']['spec']['ports'][0]['port']}": (
            victorialogs_service.env["TASKLAB_LOGS_URL"]
        ),
    }
    return Cluster(docs, tmp_path, rewrites)


def test_every_deployment_of_the_dev_overlay_runs_natively_and_passes_its_probes(
    cluster, zk_chroot, kafka_namespace, role_log_dir
):
    deployments = [d for d in cluster.docs if d["kind"] == "Deployment"]
    assert len(deployments) >= 6
    pods: list[tuple[Pod, dict, dict]] = []
    try:
        for deployment in deployments:
            # One of each, and both schedulers: a standby's readiness is not the leader's
            # (it must know a leader, not be one). Other replicas of a role are alike, and this
            # machine's two cores are shared.
            replicas = deployment["spec"].get("replicas", 1)
            if deployment["metadata"]["name"] != "scheduler":
                replicas = 1
            for index in range(replicas):
                argv, env, ports = cluster.pod(deployment, index)
                # One machine, one ZooKeeper and one Kafka for many tests: this one's own
                # chroot and topic prefix, as a cluster's namespace would be.
                env["TASKLAB_ZK_CHROOT"] = zk_chroot
                env["TASKLAB_KAFKA_NAMESPACE"] = kafka_namespace
                pod = Pod(argv, env, role_log_dir, f"{deployment['metadata']['name']}-{index}")
                pods.append((pod.start(), deployment, ports))
        assert cluster.used == set(cluster.rewrites), (
            f"manifests no longer name {set(cluster.rewrites) - cluster.used}"
        )

        for pod, deployment, ports in pods:
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            for probe in ("readinessProbe", "livenessProbe"):
                get = container[probe]["httpGet"]
                port = ports[get["port"]]

                def answers(pod=pod, port=port, path=get["path"]) -> bool:
                    assert pod.alive(), f"{pod.name} exited:\n{pod.log_text()[-3000:]}"
                    return probe_answers(port, path)

                eventually(
                    answers,
                    READY_TIMEOUT,
                    0.25,
                    message=f"{pod.name}: {probe} {get['path']} on its {get['port']} port",
                )

        # With every role ready, the platform works as deployed: a task through the API,
        # with the dev Secret's key (the production profile requires one), to SUCCESS.
        api = next((p, ports) for p, d, ports in pods if d["metadata"]["name"] == "api")
        api_port = api[1]["http"]
        (key,) = yaml.safe_load(api[0].env["API_KEYS"])
        headers = {"X-API-Key": key}
        base = f"http://127.0.0.1:{api_port}/api/v1/tasks"
        assert httpx.post(base, json={"taskType": "SHELL", "payload": "echo hi"}).status_code == 401
        created = httpx.post(
            base,
            json={"taskName": "smoke", "taskType": "SHELL", "payload": "echo manifests"},
            headers=headers,
            timeout=10,
        )
        assert created.status_code in (200, 201, 202), created.text
        task_id = created.json()["taskId"]

        def succeeded() -> bool:
            body = httpx.get(f"{base}/{task_id}", headers=headers, timeout=5).json()
            assert body["status"] not in ("FAILED", "CANCELLED"), body
            return body["status"] == "SUCCESS" and "manifests" in (body.get("result") or "")

        eventually(succeeded, 60, 0.25, message=f"task {task_id} SUCCESS through the API")

        # The archiver, deployed, archived its final state: one row, in the DSN the Secret
        # gave it (rewritten to this test's database).
        archiver = next(p for p, d, _ in pods if d["metadata"]["name"] == "archiver")
        dsn = archiver.env["TASKLAB_ARCHIVE_DSN"]

        def archived() -> bool:
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                rows = conn.execute(
                    "SELECT status FROM task_attempts WHERE task_id = %s", (task_id,)
                ).fetchall()
            assert rows in ([], [("SUCCESS",)]), rows
            return rows == [("SUCCESS",)]

        eventually(archived, 60, 0.25, message=f"task {task_id} archived once")

        # Every role ships its lines to the log store the endpoints name: the archiver's own
        # process (role-hostname-pid, as it names itself) has lines there.
        logs_url = archiver.env["LOGS_URL"]  # from the endpoints; the profile reads it
        process = f"archiver-{socket.gethostname()}-{archiver.pid}"

        def shipped() -> bool:
            response = httpx.post(
                f"{logs_url}/select/logsql/query",
                data={"query": f'{{process="{process}"}}', "limit": "5"},
                timeout=5,
            )
            assert response.status_code == 200, response.text[:300]
            return bool(response.text.strip())

        eventually(shipped, 30, 0.5, message=f"{process}'s lines in the log store")
    finally:
        stop_all([pod for pod, _, _ in pods])
        for pod, _, _ in pods:
            print(f"\n----- {pod.name} (pid {pod.pid}) -----\n{pod.log_text()[-3000:]}")


def test_the_cleanup_cronjobs_command_runs_natively_with_its_manifests_environment(cluster):
    (cron,) = [d for d in cluster.docs if d["kind"] == "CronJob"]
    as_deployment = {
        "metadata": cron["metadata"],
        "spec": {"template": cron["spec"]["jobTemplate"]["spec"]["template"]},
    }
    argv, env, _ = cluster.pod(as_deployment, 0)
    done = subprocess.run(
        argv,
        env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"removed \d+ finished task\(s\) older than", done.stdout), done.stdout
    redis = next(old for old in cluster.rewrites if old.startswith("redis://"))
    assert redis in cluster.used  # it cleaned the test's Redis, not a default one
