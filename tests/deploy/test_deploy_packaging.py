"""deploy/Dockerfile, deploy/compose and deploy/bento: structure checks that need no Docker engine."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy.deploy_settings import ROOT, documented

DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
DEPLOYABLES = {"profile", "scoring", "decision", "channels", "audit", "gateway"}


def workspace_members() -> dict[str, Path]:
    """uv workspace package name -> its directory."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    members: dict[str, Path] = {}
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        for directory in ROOT.glob(pattern):
            if (directory / "pyproject.toml").exists():
                name = tomllib.loads((directory / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
                members[name] = directory
    return members


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text(encoding="utf-8"))
    return data


def test_dockerfile_installs_only_the_package_from_the_lock_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M)
    assert stages[0][0] == "${PYTHON_IMAGE}" and re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    assert {alias for _, alias in stages} >= {"build", "runtime", "scoring"}
    assert re.search(r"uv sync --frozen --no-dev --package \"\$\{PACKAGE\}\"", text)
    assert "--no-editable" not in text, "migrations are found beside the source: keep the install editable"
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in {"root", "0", "0:0"}
    assert re.search(r"^HEALTHCHECK .*healthcheck\.py", text, re.M)
    assert (DEPLOY / "healthcheck.py").exists()


def test_dockerfile_copies_every_workspace_manifest_for_the_dependency_layer() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    for name, directory in workspace_members().items():
        manifest = (directory / "pyproject.toml").relative_to(ROOT).as_posix()
        assert f"COPY {manifest} " in text, f"{name}: uv sync needs {manifest} to resolve the workspace"


def test_dockerignore_keeps_sources_in_the_context() -> None:
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert "**/.venv" in ignored
    for needed in ("libs", "services", "gateway", "uv.lock", "pyproject.toml", "deploy/healthcheck.py"):
        assert needed not in ignored, needed


def test_compose_services_have_an_image_and_existing_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        depends = service.get("depends_on", {})
        for target, condition in (depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)):
            assert target in services, f"{name} depends on unknown {target}"
            assert target != name
            assert condition.get("condition", "service_started") in {
                "service_started", "service_healthy", "service_completed_successfully",
            }
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services[target] or "build" in services[target], (
                    f"{target} has no healthcheck (the image's HEALTHCHECK counts for built services)"
                )
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose.get("volumes", {}), f"{name} uses undeclared volume {source}"


def test_compose_migrates_each_service_before_it_starts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    members = workspace_members()
    for name in DEPLOYABLES:
        migrate = services[f"migrate-{name}"]
        assert migrate["command"] == ["migrate"] and migrate["restart"] == "no"
        assert services[name]["command"] == ["serve"]
        assert services[name]["depends_on"][f"migrate-{name}"] == {"condition": "service_completed_successfully"}
        assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}
        for service in (migrate, services[name]):
            args = service["build"]["args"]
            assert args["PACKAGE"] in members, args
            assert args["MODULE"] == f"retain_{name}"
            importlib.import_module(args["MODULE"])
            assert (ROOT / "deploy" / "compose" / service["build"]["context"] / service["build"]["dockerfile"]).exists()
        assert services[name]["image"] == migrate["image"]
        assert services[name]["build"] == migrate["build"]
    assert services["scoring"]["build"]["target"] == "scoring"


def test_compose_listens_on_the_addresses_callers_use(compose: dict[str, Any]) -> None:
    services = compose["services"]
    known = set(documented(ROOT / "docs" / "CONFIGURATION.md"))
    for name, service in services.items():
        for var in service.get("environment", {}) if isinstance(service.get("environment"), dict) else []:
            assert var in known or name in {"postgres", "redis", "jaeger"}, f"{name}: {var} is read by nothing"
    for name in DEPLOYABLES - {"gateway"}:
        env = services[name]["environment"]
        host, port = services["gateway"]["environment"][f"RETAIN_{name.upper()}_ADDR"].split(":")
        assert host == name and env[f"RETAIN_{name.upper()}_PORT"] == port
        assert env[f"RETAIN_{name.upper()}_HOST"] == "0.0.0.0"
    assert services["gateway"]["environment"]["RETAIN_GATEWAY_HOST"] == "0.0.0.0"


def test_compose_traces_reach_the_trace_ui(compose: dict[str, Any]) -> None:
    services = compose["services"]
    endpoint = services["gateway"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    collector_host = re.match(r"https?://([^:/]+)", endpoint)
    assert collector_host and collector_host.group(1) in services
    assert "opentelemetry-collector" in services[collector_host.group(1)]["image"]
    config = yaml.safe_load((COMPOSE_DIR / "otel-collector.yaml").read_text(encoding="utf-8"))
    (pipeline,) = config["service"]["pipelines"].values()
    for exporter in pipeline["exporters"]:
        host = config["exporters"][exporter]["endpoint"].split(":")[0]
        assert host in services and "jaeger" in services[host]["image"]
    assert set(pipeline["receivers"]) <= set(config["receivers"])


def test_bentofile_is_valid_and_points_at_the_scoring_service() -> None:
    import bentoml
    from bentoml._internal.bento.build_config import BentoBuildConfig

    path = DEPLOY / "bento" / "bentofile.yaml"
    with path.open(encoding="utf-8") as fh:
        config = BentoBuildConfig.from_yaml(fh)
    module_name, _, attr = config.service.partition(":")
    service = getattr(importlib.import_module(module_name), attr)
    assert isinstance(service, bentoml.Service)
    assert {str(m.tag).split(":")[0] for m in config.models} == {"retain-btyd"}
    # The bento installs the workspace libraries scoring imports as wheels that build.sh builds.
    build = (DEPLOY / "bento" / "build.sh").read_text(encoding="utf-8")
    for wheel in config.python.wheels or []:
        package = Path(wheel).name.split("-")[0].replace("_", "-")
        assert package in workspace_members() and package in build, wheel
    scoring = tomllib.loads((ROOT / "services/scoring/pyproject.toml").read_text(encoding="utf-8"))
    workspace_deps = {d for d in scoring["project"]["dependencies"] if d in workspace_members()}
    shipped = {Path(w).name.split("-")[0].replace("_", "-") for w in config.python.wheels or []}
    assert workspace_deps <= shipped, f"scoring needs {workspace_deps - shipped} in the bento"
