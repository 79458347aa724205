"""A small Kustomize renderer for the features deploy/k8s uses, so the manifests render without kubectl.

Supported: resources (files and directories), namespace, images, replicas, and patches (strategic merge, by name
or by target; JSON 6902 add/replace/remove by target). Anything else in a kustomization is an error, so the
overlays cannot quietly outgrow what this renders. test_deploy_manifests compares it with `kubectl kustomize`
whenever kubectl is installed.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

Obj = dict[str, Any]
SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "IngressClass", "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
# Strategic-merge keys of the lists these manifests patch; other lists are replaced whole.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath"}
SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}


class KustomizeError(ValueError):
    pass


def load_yaml_docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def render(directory: Path) -> list[Obj]:
    config = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(config) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in config.get("resources", []):
        path = (directory / entry).resolve()
        objects.extend(render(path) if path.is_dir() else load_yaml_docs(path))
    for patch in config.get("patches", []):
        _apply_patch(objects, patch, directory)
    for rep in config.get("replicas", []):
        hits = [o for o in objects if o["kind"] in SCALABLE and o["metadata"]["name"] == rep["name"]]
        if not hits:
            raise KustomizeError(f"replicas: no workload named {rep['name']}")
        for obj in hits:
            obj["spec"]["replicas"] = rep["count"]
    for image in config.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    if namespace := config.get("namespace"):
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    return objects


def _apply_patch(objects: list[Obj], patch: Obj, directory: Path) -> None:
    unknown = set(patch) - {"path", "patch", "target"}
    if unknown:
        raise KustomizeError(f"unsupported patch fields {sorted(unknown)}")
    text = (directory / patch["path"]).read_text(encoding="utf-8") if "path" in patch else patch["patch"]
    docs = [d for d in yaml.safe_load_all(text) if d]
    target = patch.get("target")
    if len(docs) == 1 and isinstance(docs[0], list):
        if target is None:
            raise KustomizeError("a JSON 6902 patch needs a target")
        hits = _targets(objects, target)
        for obj in hits:
            for op in docs[0]:
                _json6902(obj, op)
        return
    for doc in docs:
        hits = _targets(objects, target) if target else [
            o for o in objects if o["kind"] == doc["kind"] and o["metadata"]["name"] == doc["metadata"]["name"]
        ]
        if not hits:
            raise KustomizeError(f"patch matches nothing: {target or doc['metadata']}")
        for obj in hits:
            body = copy.deepcopy(doc)
            if target:  # a targeted patch's own identity does not restrict it
                body.pop("metadata", None)
            body.pop("apiVersion", None)
            body.pop("kind", None)
            strategic_merge(obj, body)


def _targets(objects: list[Obj], target: Obj) -> list[Obj]:
    unknown = set(target) - {"kind", "name", "labelSelector", "group", "version"}
    if unknown:
        raise KustomizeError(f"unsupported target fields {sorted(unknown)}")
    wanted = dict(kv.split("=", 1) for kv in target.get("labelSelector", "").split(",") if kv)
    hits = []
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        if "kind" in target and obj["kind"] != target["kind"]:
            continue
        if "name" in target and not re.fullmatch(target["name"], obj["metadata"]["name"]):
            continue
        if any(labels.get(k) != v for k, v in wanted.items()):
            continue
        hits.append(obj)
    if not hits:
        raise KustomizeError(f"patch target matches nothing: {target}")
    return hits


def strategic_merge(base: Obj, patch: Obj) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise KustomizeError(f"strategic-merge directive {key} is not supported")
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            strategic_merge(base[key], value)
        elif isinstance(value, list) and isinstance(base.get(key), list) and key in MERGE_KEYS:
            merge_key = MERGE_KEYS[key]
            by_key = {item[merge_key]: item for item in base[key]}
            for item in value:
                if item[merge_key] in by_key:
                    strategic_merge(by_key[item[merge_key]], item)
                else:
                    base[key].append(copy.deepcopy(item))
        else:
            base[key] = copy.deepcopy(value)


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def _json6902(obj: Obj, op: Obj) -> None:
    *parents, last = _pointer(op["path"])
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if kind not in {"add", "replace", "remove"}:
        raise KustomizeError(f"JSON 6902 op {kind} is not supported")
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if kind == "add":
            node.insert(index, copy.deepcopy(op["value"]))
        elif kind == "replace":
            node[index] = copy.deepcopy(op["value"])
        else:
            del node[index]
        return
    if kind == "replace" and last not in node:
        raise KustomizeError(f"replace of missing {op['path']}")
    if kind == "remove":
        del node[last]
    else:
        node[last] = copy.deepcopy(op["value"])


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """name, tag, digest of an image reference (a registry port is part of the name)."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _set_image(node: Any, image: Obj) -> None:
    if isinstance(node, list):
        for item in node:
            _set_image(item, image)
        return
    if not isinstance(node, dict):
        return
    for key in ("containers", "initContainers"):
        for container in node.get(key, []) or []:
            name, tag, digest = split_image(container["image"])
            if name != image["name"]:
                continue
            name = image.get("newName", name)
            if "digest" in image:
                container["image"] = f"{name}@{image['digest']}"
            else:
                tag = str(image["newTag"]) if "newTag" in image else tag
                container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    for value in node.values():
        if isinstance(value, dict | list):
            _set_image(value, image)
