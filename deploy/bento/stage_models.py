"""Make sure the model store has what the bento packs, and list a churn model in the staged bentofile."""

from __future__ import annotations

import os
import sys

import yaml  # type: ignore[import-untyped]
from retain_scoring.store import ModelRegistry


def main(bentofile: str) -> None:
    registry = ModelRegistry(os.environ["BENTOML_HOME"])
    print("btyd", registry.ensure_btyd().ref)  # noqa: T201
    with open(bentofile, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    churn = registry.current_churn()
    if churn is not None:
        print("churn", churn.ref)  # noqa: T201
        config["models"].append("retain-churn:latest")
    with open(bentofile, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)


if __name__ == "__main__":
    main(sys.argv[1])
