"""Every environment variable the code reads: from the Settings classes and from direct os.environ reads."""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
# The modules holding Settings classes: the kit's and each deployable's config module.
CONFIG_MODULES = {
    "retain_kit.config": "all",
    "retain_profile.config": "profile",
    "retain_scoring.config": "scoring",
    "retain_decision.config": "decision",
    "retain_decision.worker": "decision",
    "retain_channels.config": "channels",
    "retain_audit.config": "audit",
    "retain_gateway.config": "gateway",
}
SOURCE_DIRS = ("libs/kit/src", "libs/cli/src", "services/*/src", "gateway/src")
_READS = (
    re.compile(r"""os\.(?:environ\.get|environ\.setdefault|getenv)\(\s*["']([A-Z][A-Z0-9_]*)["']"""),
    re.compile(r"""os\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\](?!\s*=[^=])"""),
)


@dataclass(frozen=True)
class SettingVar:
    name: str
    owner: str
    field: str
    default: Any


def settings_classes() -> list[tuple[str, type[BaseSettings]]]:
    """(owner, class) for every Settings class a process instantiates (bases that are only subclassed are left out)."""
    found: list[tuple[str, type[BaseSettings]]] = []
    for module_name, owner in CONFIG_MODULES.items():
        module = importlib.import_module(module_name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseSettings) and cls is not BaseSettings and cls.__module__ == module_name:
                found.append((owner, cls))
    classes = [cls for _, cls in found]
    return [(owner, cls) for owner, cls in found if not any(o is not cls and issubclass(o, cls) for o in classes)]


def settings_vars() -> list[SettingVar]:
    out: list[SettingVar] = []
    for owner, cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field_name, info in cls.model_fields.items():
            default = None if info.default_factory is not None else info.default
            out.append(SettingVar(f"{prefix}{field_name}".upper(), owner, field_name, default))
    return out


def direct_reads() -> dict[str, set[str]]:
    """Variables read with os.environ / os.getenv in the shipped source -> files reading them."""
    reads: dict[str, set[str]] = {}
    for pattern in SOURCE_DIRS:
        for src in ROOT.glob(pattern):
            for path in src.rglob("*.py"):
                text = path.read_text(encoding="utf-8")
                for regex in _READS:
                    for match in regex.finditer(text):
                        reads.setdefault(match.group(1), set()).add(str(path.relative_to(ROOT)))
    return reads


def documented(doc: Path) -> dict[str, list[str]]:
    """Rows of the table in docs/CONFIGURATION.md keyed by the variable in the first cell."""
    rows: dict[str, list[str]] = {}
    for line in doc.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells and (m := re.fullmatch(r"`([A-Z][A-Z0-9_]*)`", cells[0])):
            rows[m.group(1)] = cells
    return rows


def default_cell(value: Any) -> str | None:
    """How the table shows a scalar default; None for defaults it describes in words."""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value}`" if value else "(empty)"
    if isinstance(value, int | float):
        return f"`{value}`"
    return None
