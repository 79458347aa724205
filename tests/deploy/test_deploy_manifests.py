"""deploy/k8s: every overlay renders, validates against the Kubernetes schemas, and keeps the suite's invariants."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy.deploy_kustomize import render, split_image
from tests.deploy.deploy_settings import ROOT, documented

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
GRPC_SERVICES = {"profile": 50051, "scoring": 50052, "decision": 50053, "channels": 50054, "audit": 50055}
DEPLOYABLES = {**GRPC_SERVICES, "gateway": 8080}
AUTOSCALED = {"gateway", "decision", "scoring", "channels"}
# Kubernetes versions the manifests must validate against: the oldest supported target and the newest schemas.
K8S_VERSIONS = ("1.30.0", "latest")
Obj = dict[str, Any]


def by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def cpu(value: str | int | float) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory(value: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return float(value[:-2]) * units[value[-2:]] if value[-2:] in units else float(value)


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(K8S / "overlays" / request.param)


def test_there_are_dev_and_prod_overlays() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schema(overlay: tuple[str, list[Obj]], version: str) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (add it to the dev dependency group to validate schemas)",
    )
    target = kubernetes_validate.latest_version() if version == "latest" else version
    name, objects = overlay
    failures = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, target, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not failures, f"{name} against {target}:\n" + "\n".join(failures)


def test_the_schema_check_rejects_a_broken_object() -> None:
    """The validation above can fail: a misspelt field and a wrong type are caught."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    deployment = by_kind(render(K8S / "overlays" / "dev"), "Deployment")["profile"]
    deployment["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30.0", strict=True)
    del deployment["spec"]["replica"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30.0", strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("name", OVERLAYS)
def test_the_renderer_agrees_with_kubectl_kustomize(name: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / name)], capture_output=True, text=True,
                         check=True, timeout=60).stdout

    def keyed(objects: list[Obj]) -> dict[tuple[str, str, str], Obj]:
        return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}

    assert keyed(render(K8S / "overlays" / name)) == keyed([d for d in yaml.safe_load_all(out) if d])


def test_every_deployable_has_deployment_service_pdb_and_migration_job(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    assert set(by_kind(objects, "Deployment")) == set(DEPLOYABLES)
    assert set(by_kind(objects, "Service")) == set(DEPLOYABLES)
    assert set(by_kind(objects, "PodDisruptionBudget")) == set(DEPLOYABLES)
    assert set(by_kind(objects, "HorizontalPodAutoscaler")) == AUTOSCALED
    assert set(by_kind(objects, "Job")) == {f"migrate-{n}" for n in DEPLOYABLES}
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
    assert namespaces == {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}


def test_services_select_their_pods_on_a_declared_port(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    deployments = by_kind(objects, "Deployment")
    for name, service in by_kind(objects, "Service").items():
        pod = deployments[name]["spec"]["template"]
        assert matches(service["spec"]["selector"], pod["metadata"]["labels"]), name
        assert matches(deployments[name]["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]), name
        declared = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        (port,) = service["spec"]["ports"]
        assert declared[port["targetPort"]] == DEPLOYABLES[name], name


def test_probes_resources_and_listen_address(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    for name, deployment in by_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        port = DEPLOYABLES[name]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[f"RETAIN_{name.upper()}_HOST"] == "0.0.0.0", name
        assert env[f"RETAIN_{name.upper()}_PORT"] == str(port), name
        assert container["args"] == ["serve"], name
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container[probe]
            if name == "gateway":
                assert spec["httpGet"]["port"] == "http", probe
            else:
                assert spec["grpc"] == {"port": port}, f"{name} {probe}"
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, f"{name} {kind}"
        assert cpu(container["resources"]["requests"]["cpu"]) <= cpu(container["resources"]["limits"]["cpu"])
        assert memory(container["resources"]["requests"]["memory"]) <= memory(
            container["resources"]["limits"]["memory"]
        )
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name


def test_migration_jobs_run_migrate_with_the_service_image(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    deployments = by_kind(objects, "Deployment")
    for name, job in by_kind(objects, "Job").items():
        service = name.removeprefix("migrate-")
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["migrate"], name
        assert container["image"] == deployments[service]["spec"]["template"]["spec"]["containers"][0]["image"]
        assert job["spec"]["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}


def test_autoscaled_deployments_leave_replicas_to_the_hpa(overlay: tuple[str, list[Obj]]) -> None:
    name, objects = overlay
    deployments = by_kind(objects, "Deployment")
    for hpa_name, hpa in by_kind(objects, "HorizontalPodAutoscaler").items():
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) == ("Deployment", hpa_name)
        assert "replicas" not in deployments[hpa_name]["spec"], f"{hpa_name}: a fixed count fights the HPA"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    for dep_name, deployment in deployments.items():
        if dep_name not in AUTOSCALED:
            assert deployment["spec"]["replicas"] >= 1
    for pdb_name, pdb in by_kind(objects, "PodDisruptionBudget").items():
        pod_labels = deployments[pdb_name]["spec"]["template"]["metadata"]["labels"]
        assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels), pdb_name


def test_dev_runs_one_replica_and_prod_at_least_two() -> None:
    dev, prod = render(K8S / "overlays" / "dev"), render(K8S / "overlays" / "prod")

    def floor(objects: list[Obj]) -> dict[str, int]:
        counts = {n: d["spec"].get("replicas") for n, d in by_kind(objects, "Deployment").items()}
        for n, hpa in by_kind(objects, "HorizontalPodAutoscaler").items():
            counts[n] = hpa["spec"]["minReplicas"]
        return counts

    assert set(floor(dev).values()) == {1}
    assert min(floor(prod).values()) >= 2
    dev_hpa, prod_hpa = by_kind(dev, "HorizontalPodAutoscaler"), by_kind(prod, "HorizontalPodAutoscaler")
    assert all(prod_hpa[n]["spec"]["maxReplicas"] > dev_hpa[n]["spec"]["maxReplicas"] for n in AUTOSCALED)
    for name in DEPLOYABLES:
        small = by_kind(dev, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]["resources"]
        large = by_kind(prod, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert cpu(small["requests"]["cpu"]) < cpu(large["requests"]["cpu"]), name
        assert memory(small["requests"]["memory"]) < memory(large["requests"]["memory"]), name


def test_prod_images_are_pinned() -> None:
    for obj in render(K8S / "overlays" / "prod"):
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            _, tag, digest = split_image(container["image"])
            assert digest or (tag and tag not in {"latest", "dev"}), container["image"]


def test_only_the_gateway_is_reachable_from_outside(overlay: tuple[str, list[Obj]]) -> None:
    _, objects = overlay
    policies = list(by_kind(objects, "NetworkPolicy").values())
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in by_kind(objects, "Deployment").items()}
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert deny and "Ingress" in deny[0]["spec"]["policyTypes"], "no default deny of ingress"
    for name, labels in pods.items():
        rules = [
            rule for p in policies if matches(p["spec"]["podSelector"].get("matchLabels", {}), labels)
            for rule in p["spec"].get("ingress", [])
        ]
        open_to_all = [r for r in rules if not r.get("from")]
        if name == "gateway":
            assert any(DEPLOYABLES[name] in {p["port"] for p in r["ports"]} for r in open_to_all)
            continue
        assert not open_to_all, f"{name} is reachable from outside the suite"
        allowed = [r for r in rules if DEPLOYABLES[name] in {p["port"] for p in r.get("ports", [])}]
        assert allowed, f"{name}'s port is not reachable at all"
        for rule in allowed:
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, f"{name} admits {peer}"
                assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "retain"}
        assert all(matches({"app.kubernetes.io/part-of": "retain"}, other) for other in pods.values())


def test_environment_names_are_documented_and_references_resolve(overlay: tuple[str, list[Obj]]) -> None:
    """Every variable the manifests set is one the code reads (docs/CONFIGURATION.md), spelt exactly."""
    _, objects = overlay
    known = set(documented(ROOT / "docs" / "CONFIGURATION.md"))
    config_maps, secrets = by_kind(objects, "ConfigMap"), by_kind(objects, "Secret")
    service_ports = {n: s["spec"]["ports"][0]["port"] for n, s in by_kind(objects, "Service").items()}
    for name, data in config_maps.items():
        if name == "retain-config":
            for key in data["data"]:
                assert key in known, f"ConfigMap {name}: {key} is read by nothing"
            for service in GRPC_SERVICES:
                assert data["data"][f"RETAIN_{service.upper()}_ADDR"] == f"{service}:{service_ports[service]}"
    for secret in secrets.values():
        for key, value in secret["stringData"].items():
            assert "REPLACE_ME" in value or value == "{}", f"Secret {secret['metadata']['name']}.{key} looks real"
    for obj in objects:
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                pool = config_maps if "configMapRef" in source else secrets
                assert ref["name"] in pool, ref
                if "secretRef" in source:
                    for key in pool[ref["name"]]["stringData"]:
                        assert key in known, f"Secret {ref['name']}: {key} is read by nothing"
            for var in container.get("env", []):
                assert var["name"] in known, f"{obj['metadata']['name']}: {var['name']} is read by nothing"
                ref = var.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["key"] in secrets[ref["secretKeyRef"]["name"]]["stringData"]
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["key"] in config_maps[ref["configMapKeyRef"]["name"]]["data"]


def test_base_files_are_plain_yaml_the_renderer_accepts() -> None:
    for path in sorted((K8S / "base").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert doc is None or isinstance(doc, dict), path
