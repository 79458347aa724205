import sys
from pathlib import Path

from retain_kit.service_main import run_service

from retain_decision.app import build
from retain_decision.config import Settings

SERVICE_DIR = Path(__file__).resolve().parents[2]


def main() -> None:
    if sys.argv[1:2] == ["worker"]:
        from retain_decision.worker import main as worker_main

        worker_main()
        return
    run_service(settings=Settings(), service_dir=SERVICE_DIR, build=build)


if __name__ == "__main__":
    main()
