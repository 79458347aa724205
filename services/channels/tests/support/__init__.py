"""Test helpers shared by the channels tests (and reusable by cross-service contract tests)."""
