from pathlib import Path

from retain_kit.service_main import run_service

from retain_scoring.app import build
from retain_scoring.config import Settings

SERVICE_DIR = Path(__file__).resolve().parents[2]


def main() -> None:
    run_service(settings=Settings(), service_dir=SERVICE_DIR, build=build)


if __name__ == "__main__":
    main()
