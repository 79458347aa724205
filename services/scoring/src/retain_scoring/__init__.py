"""Retain scoring service. Importing the package first sets BENTOML_HOME's default (see config)."""

from retain_scoring import config as _config  # noqa: F401
