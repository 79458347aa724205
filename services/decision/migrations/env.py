from retain_decision.models import metadata
from retain_kit.migrations import run_env

run_env(metadata)
