"""deploy/kubernetes, checked offline (no cluster can run here): both overlays render with
`kubectl kustomize`, every object validates in strict mode (kubernetes-validate for the built-in
kinds, the Prometheus Operator's vendored CRD schemas for ServiceMonitor and PrometheusRule),
and the rules a deployment of tasklab must keep hold for every workload.

tests/stage5_observability/test_manifests_run.py goes further: it starts each Deployment's
command natively, with the env the manifests give it, and waits for its probes.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from common.testing.pytest_plugin import unavailable

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "stage5_observability" / "compose.yaml"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def need_kubectl() -> None:
    # Part of this kind of machine, not installed by `make setup`: where it is missing, skip
    # locally and fail under CI, as a missing service does.
    if not Path(KUBECTL).exists():
        unavailable("kubectl not found: its `kubectl kustomize` renders the manifests")


# The oldest Kubernetes the manifests promise to fit (CronJob timeZone, matchLabelKeys: 1.27+)
# and kubernetes-validate's newest.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
GOOD_SECRET = "0f4c9a8e7b6d5c4b3a29181706f5e4d3c2b1a09f8e7d6c5b"
GOOD_DSN = "postgresql://tasklab:s3cret@pg.data.svc.cluster.local:5432/tasklab"
RECOMMENDED = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
)
WORKLOADS = ("Deployment", "StatefulSet", "CronJob")


def kustomize(path: Path) -> list[dict]:
    need_kubectl()
    proc = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def dev() -> list[dict]:
    return kustomize(KUBE / "overlays" / "dev")


@pytest.fixture(scope="module")
def prod(tmp_path_factory) -> list[dict]:
    # The operator's secrets.env, which the repository never has: a copy of the tree with one.
    tree = tmp_path_factory.mktemp("kube") / "kubernetes"
    shutil.copytree(KUBE, tree)
    (tree / "overlays" / "prod" / "secrets.env").write_text(
        f'API_KEYS={{"k-1": ["Admin"]}}\nJWT_SECRET={GOOD_SECRET}\nARCHIVE_DSN={GOOD_DSN}\n'
    )
    return kustomize(tree / "overlays" / "prod")


@pytest.fixture(params=["dev", "prod"])
def rendered(request) -> list[dict]:
    return request.getfixturevalue(request.param)


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def is_tasklab(doc: dict) -> bool:
    return doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "tasklab"


def tasklab_workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in WORKLOADS and is_tasklab(d)]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def decoded(secret: dict) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def named(docs: list[dict], kind: str, prefix: str) -> dict:
    """The one object of a kustomize generator (its name gets a hash of its content)."""
    (found,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"].startswith(prefix + "-")]
    return found


# -- rendering and validation -------------------------------------------------------------------


def test_both_overlays_render_with_every_role_and_the_namespace_they_name(dev, prod):
    for docs, namespace in ((dev, "tasklab-dev"), (prod, "tasklab")):
        deployments = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
        assert {"api", "rpc", "scheduler", "manager", "checker", "agent", "archiver"} <= deployments
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == namespace, doc["metadata"]


def test_the_prod_overlay_does_not_render_without_the_operators_secrets_file(tmp_path):
    need_kubectl()
    tree = tmp_path / "kubernetes"
    shutil.copytree(KUBE, tree, ignore=shutil.ignore_patterns("secrets.env"))
    proc = subprocess.run(
        [KUBECTL, "kustomize", str(tree / "overlays" / "prod")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "secrets.env" in proc.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_built_in_object_validates_in_strict_mode(rendered, version):
    import kubernetes_validate

    for doc in rendered:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the next test: kubernetes-validate has no schema for a CRD's kinds
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} ({version}): {exc.message}")


def _strict(schema: object) -> object:
    """The CRD's schema as a strict apiserver reads it: an object with properties and no
    `x-kubernetes-preserve-unknown-fields` takes no other field (kubectl --validate=strict)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def crd_schema(kind: str) -> dict:
    for path in (KUBE / "schemas").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
            return _strict(version["schema"]["openAPIV3Schema"])
    raise AssertionError(f"no vendored CRD for {kind}")


def test_the_servicemonitor_and_prometheusrule_validate_against_the_vendored_crd_schemas(
    rendered,
):
    import jsonschema

    monitoring = [d for d in rendered if d["apiVersion"] == "monitoring.coreos.com/v1"]
    assert sorted(d["kind"] for d in monitoring) == ["PrometheusRule", "ServiceMonitor"]
    for doc in monitoring:
        schema = crd_schema(doc["kind"])
        # metadata is the apiserver's ObjectMeta, not part of the CRD's schema.
        body = {k: v for k, v in doc.items() if k != "metadata"}
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(body))
        assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_the_schema_check_itself_refuses_an_unknown_field():
    import jsonschema

    schema = crd_schema("ServiceMonitor")
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "spec": {"selector": {}, "endpoints": [{"port": "operator", "intervall": "15s"}]},
    }
    assert list(jsonschema.Draft7Validator(schema).iter_errors(bad))


# -- the copies kustomize needs are the sources' ------------------------------------------------


def test_the_copied_config_and_rules_are_current():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "sync_kubernetes.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_configmap_holds_config_base_toml_and_production_toml_unchanged(rendered):
    config = [
        d
        for d in of_kind(rendered, "ConfigMap")
        if d["metadata"]["name"].startswith("tasklab-config-")
    ]
    assert len(config) == 1
    assert config[0]["data"] == {
        "base.toml": (ROOT / "config" / "base.toml").read_text(),
        "production.toml": (ROOT / "config" / "production.toml").read_text(),
    }


def test_the_prometheusrule_carries_exactly_the_rules_of_deploy_prometheus_rules(rendered):
    groups = []
    for path in sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    assert one(rendered, "PrometheusRule", "tasklab")["spec"]["groups"] == groups


# -- every workload -----------------------------------------------------------------------------


def test_every_workload_has_requests_and_limits_and_a_locked_down_security_context(rendered):
    workloads = [d for d in rendered if d["kind"] in WORKLOADS]
    assert workloads
    for doc in workloads:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        spec = pod_spec(doc)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec.get("automountServiceAccountToken") is False, name
        for c in spec["containers"]:
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert "readOnlyRootFilesystem" in sc, name


def test_every_tasklab_container_has_a_read_only_root_and_a_scratch_tmp(rendered):
    for doc in tasklab_workloads(rendered):
        spec = pod_spec(doc)
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, doc["metadata"]["name"]
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], doc["metadata"]["name"]
            assert pod_spec(doc)["securityContext"]["runAsUser"] == 10001


def test_every_long_running_container_has_liveness_and_readiness_probes(rendered):
    for doc in rendered:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for c in pod_spec(doc)["containers"]:
            assert "livenessProbe" in c and "readinessProbe" in c, doc["metadata"]["name"]


def test_each_role_is_probed_on_its_operator_port_health_and_ready(rendered):
    for doc in of_kind(rendered, "Deployment"):
        (c,) = pod_spec(doc)["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        address = env_of(c)["TASKLAB_METRICS_ADDRESS"]["value"]
        # The port the process serves is the port the probes knock on.
        assert address == f"0.0.0.0:{ports['operator']}", doc["metadata"]["name"]
        assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "operator"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "operator"}


def test_every_tasklab_object_carries_the_recommended_labels(rendered):
    for doc in rendered:
        if not is_tasklab(doc) or doc["kind"] in ("Namespace",):
            continue
        labels = doc["metadata"]["labels"]
        for key in RECOMMENDED:
            assert labels.get(key), (doc["kind"], doc["metadata"]["name"], key)
        if doc["kind"] in WORKLOADS:
            template = (
                doc["spec"]["jobTemplate"]["spec"]["template"]
                if doc["kind"] == "CronJob"
                else doc["spec"]["template"]
            )
            for key in (*RECOMMENDED, "app.kubernetes.io/component"):
                assert template["metadata"]["labels"].get(key), (doc["metadata"]["name"], key)


def test_every_store_of_the_dev_overlay_carries_the_recommended_labels_of_its_own(dev):
    for doc in of_kind(dev, "StatefulSet"):
        for key in RECOMMENDED:
            assert doc["metadata"]["labels"].get(key), (doc["metadata"]["name"], key)


# -- roles --------------------------------------------------------------------------------------


def test_every_role_of_stage_5_has_a_deployment_that_runs_it(rendered):
    from common.stages import load_stage

    runs = {}
    for doc in of_kind(rendered, "Deployment"):
        (c,) = pod_spec(doc)["containers"]
        assert c["command"] == ["tasklab"], doc["metadata"]["name"]
        assert c["args"][0] == "run" and c["args"][2:] == ["--stage", "5"], c["args"]
        runs[c["args"][1]] = doc["metadata"]["name"]
    assert set(runs) == set(load_stage(5).roles), runs


def test_every_role_reads_the_production_profile_from_the_mounted_configmap(rendered):
    for doc in [*of_kind(rendered, "Deployment"), *of_kind(rendered, "CronJob")]:
        spec = pod_spec(doc)
        (c,) = spec["containers"]
        env = env_of(c)
        assert env["TASKLAB_ENV"]["value"] == "production"
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert env["TASKLAB_CONFIG_DIR"]["value"] == mounts["config"]
        volume = next(v for v in spec["volumes"] if v["name"] == "config")
        assert volume["configMap"]["name"].startswith("tasklab-config-")
        refs = [e["configMapRef"]["name"] for e in c["envFrom"] if "configMapRef" in e]
        assert len(refs) == 1 and refs[0].startswith("tasklab-endpoints-")


def test_only_the_front_doors_get_the_credentials(rendered):
    for doc in of_kind(rendered, "Deployment"):
        (c,) = pod_spec(doc)["containers"]
        secrets = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
        if c["args"][1] in ("api", "rpc"):
            assert len(secrets) == 1 and secrets[0].startswith("tasklab-secrets-")
        else:
            assert secrets == [], doc["metadata"]["name"]


def test_the_scheduler_runs_twice_so_one_leads_and_one_stands_by(rendered):
    assert one(rendered, "Deployment", "scheduler")["spec"]["replicas"] == 2


def test_the_agents_are_scaled_by_their_hpa_and_drain_before_the_kubelet_kills_them(rendered):
    agent = one(rendered, "Deployment", "agent")
    assert "replicas" not in agent["spec"]  # the HPA owns it
    hpa = one(rendered, "HorizontalPodAutoscaler", "agent")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "agent",
    }
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    grace = tomllib.loads((ROOT / "config" / "base.toml").read_text())["agent_stop_grace"]
    production = tomllib.loads((ROOT / "config" / "production.toml").read_text())
    grace = production.get("agent_stop_grace", grace)
    # SIGTERM, then agent_stop_grace for running tasks, then the kill and hand-back of the rest.
    assert pod_spec(agent)["terminationGracePeriodSeconds"] >= grace + 10


def test_every_deployment_has_a_disruption_budget_and_a_service_with_its_operator_port(rendered):
    budgets = of_kind(rendered, "PodDisruptionBudget")
    services = of_kind(rendered, "Service")
    for doc in of_kind(rendered, "Deployment"):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        selector = doc["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()
        assert [b for b in budgets if b["spec"]["selector"]["matchLabels"] == selector], doc[
            "metadata"
        ]["name"]
        mine = [s for s in services if s["spec"]["selector"] == selector]
        assert len(mine) == 1, doc["metadata"]["name"]
        assert "operator" in {p["name"] for p in mine[0]["spec"]["ports"]}
        # Found in ZooKeeper, not through a virtual IP: headless, except the API's front door.
        headless = mine[0]["spec"].get("clusterIP") == "None"
        assert headless == (doc["metadata"]["name"] != "api"), doc["metadata"]["name"]


def test_the_servicemonitor_scrapes_every_roles_service_with_the_rules_labels(rendered):
    monitor = one(rendered, "ServiceMonitor", "tasklab")
    selector = monitor["spec"]["selector"]["matchLabels"]
    for doc in of_kind(rendered, "Deployment"):
        svc = one(rendered, "Service", doc["metadata"]["name"])
        assert selector.items() <= svc["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "operator" and endpoint["path"] == "/metrics"
    targets = {r["targetLabel"] for r in endpoint["relabelings"]}
    # deploy/prometheus/rules select up{job="tasklab", role="agent"} and name the instance.
    assert {"job", "role", "instance"} <= targets
    rules = (ROOT / "deploy" / "prometheus" / "rules" / "tasklab.yml").read_text()
    assert 'job="tasklab"' in rules and 'role="agent"' in rules


def test_the_cleanup_cronjob_runs_tasklab_data_cleanup_one_at_a_time(rendered):
    job = one(rendered, "CronJob", "data-cleanup")
    (c,) = pod_spec(job)["containers"]
    assert [*c["command"], *c["args"]] == ["tasklab", "data", "cleanup"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"


def test_ingress_is_denied_by_default_and_let_in_only_where_a_policy_says(rendered):
    policies = {p["metadata"]["name"]: p for p in of_kind(rendered, "NetworkPolicy")}
    deny = policies["tasklab-default-deny-ingress"]["spec"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "tasklab"}
    named_ports = {
        p["name"]
        for doc in of_kind(rendered, "Deployment")
        for c in pod_spec(doc)["containers"]
        for p in c["ports"]
    }
    for policy in policies.values():
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if isinstance(port["port"], str) and is_tasklab(policy):
                    assert port["port"] in named_ports, policy["metadata"]["name"]


# -- secrets ------------------------------------------------------------------------------------


def test_the_base_and_the_prod_overlay_carry_no_secret_value():
    for path in [*KUBE.joinpath("base").rglob("*.yaml"), KUBE / "overlays/prod/kustomization.yaml"]:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:
            assert doc.get("kind") != "Secret", path
            for generator in doc.get("secretGenerator", []):
                assert "literals" not in generator and "files" not in generator, path
                assert generator["envs"] == ["secrets.env"], path
    example = (KUBE / "overlays/prod/secrets.env.example").read_text()
    for line in example.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert value == "", f"secrets.env.example gives {key} a value"


def test_the_operators_secrets_file_is_never_committed():
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/kubernetes/overlays/prod/secrets.env"],
        cwd=ROOT,
        timeout=30,
    )
    assert ignored.returncode == 0
    tracked = subprocess.run(
        ["git", "ls-files", "deploy/kubernetes"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert "deploy/kubernetes/overlays/prod/secrets.env" not in tracked


def test_the_dev_overlays_credentials_are_marked_throwaway_and_pass_the_roles_checks(dev):
    from common.config.settings import parse_api_keys, weak_secret_reason

    secrets = of_kind(dev, "Secret")
    assert len(secrets) == 2
    for secret in secrets:
        assert "dev-only" in secret["metadata"]["annotations"]["tasklab.dev/throwaway"]
    data = decoded(named(dev, "Secret", "tasklab-secrets"))
    assert set(data) == {"API_KEYS", "JWT_SECRET", "ARCHIVE_DSN"}
    assert weak_secret_reason(data["JWT_SECRET"]) is None  # else the production roles refuse it
    assert all(key.startswith("dev-only") for key in parse_api_keys(data["API_KEYS"]))
    # The archive's DSN opens the dev PostgreSQL: its password is the one the server was
    # given, its host and port the Service's.
    dsn = re.fullmatch(r"postgresql://(\w+):([^@]+)@([a-z-]+):(\d+)/(\w+)", data["ARCHIVE_DSN"])
    assert dsn, data["ARCHIVE_DSN"]
    user, password, host, port, database = dsn.groups()
    assert password.startswith("dev-only")
    assert decoded(named(dev, "Secret", "postgres-credentials")) == {"POSTGRES_PASSWORD": password}
    (pg,) = pod_spec(one(dev, "StatefulSet", "postgres"))["containers"]
    env = env_of(pg)
    assert (env["POSTGRES_USER"]["value"], env["POSTGRES_DB"]["value"]) == (user, database)
    assert int(port) in [p["port"] for p in one(dev, "Service", host)["spec"]["ports"]]


def test_the_prod_secret_holds_only_what_the_operator_supplied(prod):
    (secret,) = of_kind(prod, "Secret")
    assert decoded(secret) == {
        "API_KEYS": '{"k-1": ["Admin"]}',
        "JWT_SECRET": GOOD_SECRET,
        "ARCHIVE_DSN": GOOD_DSN,
    }


def test_every_secret_key_a_pod_reads_is_in_the_overlays_secret(rendered):
    # A secretKeyRef to a missing Secret or key keeps the pod from starting at all
    # (CreateContainerConfigError), which no offline check of the role's code would notice.
    secrets = {d["metadata"]["name"]: decoded(d) for d in of_kind(rendered, "Secret")}
    refs = 0
    for doc in rendered:
        if doc["kind"] not in WORKLOADS:
            continue
        for c in pod_spec(doc)["containers"]:
            for item in c.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs += 1
                    assert ref["key"] in secrets[ref["name"]], (doc["metadata"]["name"], ref)
                    assert not ref.get("optional"), (doc["metadata"]["name"], ref)
    assert refs


def test_the_archiver_gets_its_dsn_from_the_secret_and_no_other_credential(rendered):
    (c,) = pod_spec(one(rendered, "Deployment", "archiver"))["containers"]
    ref = env_of(c)["TASKLAB_ARCHIVE_DSN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"].startswith("tasklab-secrets-") and ref["key"] == "ARCHIVE_DSN"
    secret_refs = [
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in c["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    ]
    assert secret_refs == ["ARCHIVE_DSN"]
    # The front doors read the archive too: their whole Secret carries it, and config/base.toml
    # reads it as archive_dsn.
    base = tomllib.loads((ROOT / "config" / "base.toml").read_text())
    assert base["archive_dsn"] == "${ARCHIVE_DSN:-}"


def test_every_role_ships_its_logs_to_the_endpoints_log_store(rendered):
    # The profile reads LOGS_URL, which every role and the CronJob get from the endpoints
    # ConfigMap (test_every_role_reads_the_production_profile_from_the_mounted_configmap).
    production = tomllib.loads((ROOT / "config" / "production.toml").read_text())
    assert production["logs_url"] == "${LOGS_URL:-}"
    endpoints = named(rendered, "ConfigMap", "tasklab-endpoints")
    assert re.fullmatch(r"http://[a-z0-9.-]+:\d+", endpoints["data"]["LOGS_URL"])


# -- the dev overlay's stores are the compose file's ---------------------------------------------


def test_the_dev_stores_use_the_compose_files_images_and_flags(dev):
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("redis", "zookeeper", "kafka", "postgres", "victorialogs"):
        (c,) = pod_spec(one(dev, "StatefulSet", name))["containers"]
        assert c["image"] == compose[name]["image"], name
    (vlogs,) = pod_spec(one(dev, "StatefulSet", "victorialogs"))["containers"]
    assert vlogs["args"] == compose["victorialogs"]["command"]  # the image's entrypoint runs
    (redis,) = pod_spec(one(dev, "StatefulSet", "redis"))["containers"]
    assert redis["command"] == compose["redis"]["command"]
    assert redis["command"][1:] == ["--appendonly", "yes", "--appendfsync", "everysec"]
    (zk,) = pod_spec(one(dev, "StatefulSet", "zookeeper"))["containers"]
    assert {e["name"]: e["value"] for e in zk["env"]} == compose["zookeeper"]["environment"]
    (kafka,) = pod_spec(one(dev, "StatefulSet", "kafka"))["containers"]
    env = {e["name"]: e["value"] for e in kafka["env"]}
    want = {k: str(v) for k, v in compose["kafka"]["environment"].items()}
    # Only how the broker is reached differs: no host listener in a cluster, and the
    # controller is this same JVM.
    network = {
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
    }
    assert {k: v for k, v in env.items() if k not in network} == {
        k: v for k, v in want.items() if k not in network
    }
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft: no ZooKeeper for Kafka


def test_the_dev_endpoints_name_the_dev_stores_services(dev):
    (endpoints,) = [
        d
        for d in of_kind(dev, "ConfigMap")
        if d["metadata"]["name"].startswith("tasklab-endpoints-")
    ]
    services = {s["metadata"]["name"]: s for s in of_kind(dev, "Service")}
    for key, value in endpoints["data"].items():
        host, port = re.match(r"^(?:[a-z]+://)?([a-z-]+):(\d+)", value).groups()
        ports = [p["port"] for p in services[host]["spec"]["ports"]]
        assert int(port) in ports, (key, value)


def test_the_prod_endpoints_point_at_no_in_namespace_store(prod):
    assert not of_kind(prod, "StatefulSet")
    (endpoints,) = [
        d
        for d in of_kind(prod, "ConfigMap")
        if d["metadata"]["name"].startswith("tasklab-endpoints-")
    ]
    assert set(endpoints["data"]) == {"REDIS_URL", "ZK_HOSTS", "KAFKA_BOOTSTRAP", "LOGS_URL"}
    assert json.dumps(endpoints["data"]).count("127.0.0.1") == 0


def test_every_dev_store_lets_tasklabs_pods_in_on_a_port_it_serves(dev):
    # The base denies ingress to tasklab's pods only; a store's own policy must let the roles
    # reach it, on a port its container names (a policy naming a missing port lets nothing in).
    policies = of_kind(dev, "NetworkPolicy")
    for store in of_kind(dev, "StatefulSet"):
        labels = store["spec"]["template"]["metadata"]["labels"]
        (c,) = pod_spec(store)["containers"]
        served = {p["name"] for p in c["ports"]}
        mine = [
            p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        allowed = {
            port["port"]
            for p in mine
            for rule in p["spec"].get("ingress", [])
            if {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "tasklab"}}}
            in rule.get("from", [])
            for port in rule.get("ports", [])
        }
        assert allowed and allowed <= served, (store["metadata"]["name"], allowed, served)
