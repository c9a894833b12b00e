"""deploy/compose.yml: the four services, and every file and name they refer to exists.

No container runtime runs here; what can break silently is structure: a mount pointing at a
moved file, Prometheus loading rules from a path nothing is mounted at, Grafana looking for
the dashboard in another folder, a host name that is not a service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yml").read_text())


def binds(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path, for bind mounts (host paths are relative to deploy/)."""
    result = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            result[target] = (DEPLOY / source).resolve()
    return result


def test_services_are_present() -> None:
    assert set(compose()["services"]) == {"model-router", "redis", "prometheus", "grafana"}


def test_every_bind_mount_source_exists_and_named_volumes_are_declared() -> None:
    document = compose()
    declared = set(document.get("volumes") or {})
    for name, service in document["services"].items():
        for target, source in binds(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_the_service_is_built_from_the_containerfile() -> None:
    build = compose()["services"]["model-router"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert (context / build["dockerfile"]).is_file()
    assert (context / "app.py").is_file()


def test_prometheus_gets_its_config_and_the_alert_rules() -> None:
    service = compose()["services"]["prometheus"]
    mounts = binds(service)
    config_arg = next(a for a in service["command"] if a.startswith("--config.file="))
    config_path = config_arg.split("=", 1)[1]
    assert mounts[config_path] == DEPLOY / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(mounts[config_path].read_text())
    for rule_file in config["rule_files"]:
        assert mounts[rule_file] == DEPLOY / "prometheus" / "alerts.yml"
    target = config["scrape_configs"][0]["static_configs"][0]["targets"][0]
    host, port = target.rsplit(":", 1)
    assert host in compose()["services"]
    assert any(p.endswith(f":{port}") for p in compose()["services"][host]["ports"])


def test_grafana_provisions_the_dashboard_and_datasources() -> None:
    service = compose()["services"]["grafana"]
    mounts = binds(service)
    assert mounts["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/model-router.yml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    dashboards = [t for t, s in mounts.items() if s == DEPLOY / "grafana" / "model-router.json"]
    assert dashboards and all(Path(t).parent == Path(folder) for t in dashboards)
    assert service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in dashboards
    services = compose()["services"]
    for path in (DEPLOY / "grafana/provisioning/datasources").glob("*.yml"):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            assert urlparse(source["url"]).hostname in services, source["name"]
    assert "redis-datasource" in service["environment"]["GF_INSTALL_PLUGINS"]


def test_the_service_reaches_redis_and_keeps_its_admin_key_out_of_the_file() -> None:
    environment = compose()["services"]["model-router"]["environment"]
    assert urlparse(environment["MODEL_ROUTER_REDIS_URL"]).hostname in compose()["services"]
    assert environment["MODEL_ROUTER_ADMIN_KEY"].startswith("${MODEL_ROUTER_ADMIN_KEY:?")
    ports = compose()["services"]["model-router"]["ports"]
    assert {p.rsplit(":", 1)[1] for p in ports} == {"8000", "8001"}
    assert all(p.startswith("127.0.0.1:") for s in compose()["services"].values() for p in s.get("ports", []))
