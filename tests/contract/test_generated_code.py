"""The checked-in generated code must be exactly what `make protos` produces."""

import filecmp
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(base: Path) -> dict[str, Path]:
    return {str(p.relative_to(base)): p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_checked_in_code_matches_make_protos(tmp_path: Path) -> None:
    _load_generator().generate(tmp_path)
    fresh = _tree(tmp_path / "retain")
    checked_in = _tree(ROOT / "libs" / "api" / "src" / "retain")
    assert sorted(fresh) == sorted(checked_in), "generated file set differs: run `make protos`"
    differing = [name for name, path in fresh.items() if not filecmp.cmp(path, checked_in[name], shallow=False)]
    assert not differing, f"stale generated code (run `make protos`): {differing}"


def test_every_rpc_has_its_own_request_and_response() -> None:
    from google.protobuf import descriptor_pool
    from retain.audit.v1 import audit_pb2  # noqa: F401
    from retain.channels.v1 import channels_pb2  # noqa: F401
    from retain.decision.v1 import decision_pb2  # noqa: F401
    from retain.profile.v1 import profile_pb2  # noqa: F401
    from retain.scoring.v1 import scoring_pb2  # noqa: F401

    pool = descriptor_pool.Default()
    seen: set[str] = set()
    for name in ("profile", "scoring", "decision", "channels", "audit"):
        file = pool.FindFileByName(f"retain/{name}/v1/{name}.proto")
        assert file.package == f"retain.{name}.v1"
        for service in file.services_by_name.values():
            for method in service.methods:
                assert method.input_type.name == f"{method.name}Request", method.full_name
                assert method.output_type.name == f"{method.name}Response", method.full_name
                for message in (method.input_type.full_name, method.output_type.full_name):
                    assert message not in seen, f"{message} shared between RPCs"
                    seen.add(message)
