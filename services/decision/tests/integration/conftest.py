"""The real-suite fixtures, shared by every decision integration module."""

from test_decision_service import bentoml_home, suite  # noqa: F401
