"""docs/CONFIGURATION.md lists every environment variable the code reads, with current defaults."""

from __future__ import annotations

import pytest

from tests.deploy.deploy_settings import ROOT, SettingVar, default_cell, direct_reads, documented, settings_vars

DOC = ROOT / "docs" / "CONFIGURATION.md"
# Read by the OpenTelemetry SDK rather than our code; documented because the deployments set them.
SDK_VARIABLES = {"OTEL_EXPORTER_OTLP_INSECURE", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
                 "OTEL_RESOURCE_ATTRIBUTES"}


def test_the_enumeration_sees_every_settings_class() -> None:
    owners = {v.owner for v in settings_vars()}
    assert owners == {"all", "profile", "scoring", "decision", "channels", "audit", "gateway"}
    names = {v.name for v in settings_vars()}
    assert {"RETAIN_AUDIT_PORT", "RETAIN_GATEWAY_RATE_LIMIT", "RETAIN_PROFILE_ADDR"} <= names
    assert "RETAIN_HOST" not in names, "KitSettings is only a base: its RETAIN_ prefix is never read"


def test_every_settings_field_is_in_the_table() -> None:
    rows = documented(DOC)
    missing = sorted(v.name for v in settings_vars() if v.name not in rows)
    assert not missing, f"add to docs/CONFIGURATION.md: {missing}"


def test_every_direct_environment_read_is_in_the_table() -> None:
    rows = documented(DOC)
    reads = direct_reads()
    assert {"RETAIN_DATABASE_URL", "REDIS_URL", "RETAIN_VAR_DIR", "BENTOML_HOME"} <= set(reads)
    missing = {name: sorted(files) for name, files in reads.items() if name not in rows}
    assert not missing, f"add to docs/CONFIGURATION.md: {missing}"


def test_the_table_names_nothing_that_is_not_read() -> None:
    known = {v.name for v in settings_vars()} | set(direct_reads()) | SDK_VARIABLES
    stale = sorted(set(documented(DOC)) - known)
    assert not stale, f"no code reads these any more: {stale}"


@pytest.mark.parametrize("var", settings_vars(), ids=lambda v: v.name)
def test_defaults_and_readers_match_the_code(var: SettingVar) -> None:
    row = documented(DOC).get(var.name)
    if row is None:
        pytest.fail(f"{var.name} is not documented")
    assert len(row) == 4, f"{row[0]}: expected | Variable | Default | Read by | What it does |"
    expected = default_cell(var.default)
    if expected is not None:
        assert row[1] == expected, f"{row[0]}: the code's default is {expected}"
    if var.owner != "all":
        assert var.owner in row[2], f"{row[0]} is read by {var.owner}"
    assert row[3], f"{row[0]}: say what it does"
