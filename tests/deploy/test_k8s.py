"""deploy/k8s: every manifest validated against the Kubernetes JSON schemas, and wired together.

kubernetes-validate ships the schemas for each Kubernetes release, so this runs offline with
no cluster. Strict mode rejects unknown fields, so a misspelt key (``readinesProbe``) fails
here instead of being silently ignored by the API server's defaulting.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from actors.build.demo_models import DEMO_SPECS
from actors.core.rules import parse_config

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for path in MANIFESTS for doc in documents(path)}


def router_deployment() -> dict[str, Any]:
    return resources()[("Deployment", "model-router")]


def pod_spec() -> dict[str, Any]:
    return router_deployment()["spec"]["template"]["spec"]


def main_container() -> dict[str, Any]:
    return next(c for c in pod_spec()["containers"] if c["name"] == "model-router")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize(
    ("path", "index"),
    [(p, i) for p in MANIFESTS for i in range(len(documents(p)))],
    ids=lambda v: v.name if isinstance(v, Path) else str(v),
)
def test_manifest_is_valid_against_the_kubernetes_schema(path: Path, index: int) -> None:
    document = documents(path)[index]
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(p) for p in error.path)
        pytest.fail(f"{path.name} {document['kind']}/{document['metadata']['name']}: {where}: {error.message}")


def test_the_validator_rejects_a_misspelt_field() -> None:
    """Guards the test above: strict validation must really catch unknown fields."""
    broken = router_deployment()
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_only_existing_files() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)


def test_every_required_kind_is_there() -> None:
    kinds = {kind for kind, _ in resources()}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy"} <= kinds
    assert ("Deployment", "redis") in resources() and ("Service", "redis") in resources()


def test_deployment_runs_three_replicas_on_both_ports_with_probes_and_limits() -> None:
    assert router_deployment()["spec"]["replicas"] == 3
    container = main_container()
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "data": 8001}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}


def test_every_container_is_non_root_with_a_read_only_root_filesystem() -> None:
    for (kind, name), doc in resources().items():
        if kind != "Deployment":
            continue
        spec = doc["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (name, container["name"])


def test_the_writable_paths_are_emptydirs() -> None:
    """Config (with reload backups), version state and /tmp must be writable on a read-only root."""
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in main_container()["volumeMounts"]}
    for path in ("/app/conf", "/app/state", "/tmp"):
        assert "emptyDir" in volumes[mounts[path]], path
    state_file = next(e["value"] for e in main_container()["env"] if e["name"] == "MODEL_ROUTER_STATE_FILE")
    assert Path(state_file).parent == Path("/app/state")


def test_admin_key_comes_from_a_secret() -> None:
    env = {e["name"]: e for e in main_container()["env"]}
    assert env["MODEL_ROUTER_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "model-router-admin"
    assert "value" not in env["MODEL_ROUTER_ADMIN_KEY"]


def test_init_container_copies_every_configmap_file_into_the_config_folder() -> None:
    config_map = resources()[("ConfigMap", "model-router-config")]
    init = pod_spec()["initContainers"][0]
    source = next(m["mountPath"] for m in init["volumeMounts"] if m["name"] == "config-source")
    words = shlex.split(init["command"][-1])
    assert {f"{source}/{key}" for key in config_map["data"]} <= set(words)
    assert words[-1].rstrip("/") == "/app/conf"


def test_configmap_rules_are_a_valid_config_for_the_image_models() -> None:
    data = resources()[("ConfigMap", "model-router-config")]["data"]
    config = parse_config(data["model_router_rules.yml"], known_models=frozenset(s.name for s in DEMO_SPECS))
    assert config.rules and config.settings.model_repository == "../models"
    assert isinstance(yaml.safe_load(data["access.yml"]), dict)


def test_services_pdb_hpa_and_policies_select_the_right_pods() -> None:
    everything = resources()
    router_labels = router_deployment()["spec"]["template"]["metadata"]["labels"]
    redis_labels = everything[("Deployment", "redis")]["spec"]["template"]["metadata"]["labels"]
    assert selects(router_deployment()["spec"]["selector"]["matchLabels"], router_labels)

    service = everything[("Service", "model-router")]["spec"]
    assert selects(service["selector"], router_labels) and not selects(service["selector"], redis_labels)
    container_ports = {p["name"] for p in main_container()["ports"]}
    assert {p["targetPort"] for p in service["ports"]} == container_ports
    assert selects(everything[("Service", "redis")]["spec"]["selector"], redis_labels)

    pdb = everything[("PodDisruptionBudget", "model-router")]["spec"]
    assert selects(pdb["selector"]["matchLabels"], router_labels)
    assert not selects(pdb["selector"]["matchLabels"], redis_labels)
    assert pdb["minAvailable"] < router_deployment()["spec"]["replicas"]

    hpa = everything[("HorizontalPodAutoscaler", "model-router")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "model-router"
    assert hpa["minReplicas"] == router_deployment()["spec"]["replicas"] < hpa["maxReplicas"]

    policy = everything[("NetworkPolicy", "model-router")]["spec"]
    assert selects(policy["podSelector"]["matchLabels"], router_labels)
    allowed = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert allowed == {8000, 8001}
    redis_policy = everything[("NetworkPolicy", "redis")]["spec"]
    assert selects(redis_policy["podSelector"]["matchLabels"], redis_labels)
    assert selects(redis_policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"], router_labels)


def test_redis_url_names_the_redis_service() -> None:
    env = {e["name"]: e.get("value") for e in main_container()["env"]}
    redis_port = resources()[("Service", "redis")]["spec"]["ports"][0]["port"]
    assert env["MODEL_ROUTER_REDIS_URL"] == f"redis://redis:{redis_port}/0"
