from retain_kit.migrations import run_env
from retain_scoring.models import metadata

run_env(metadata)
