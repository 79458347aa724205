from pathlib import Path

import pandas as pd
import pytest
from profile_stack import ProfileStack, make_profile
from retain.profile.v1 import profile_pb2
from retain_profile.cli import run_import
from retain_profile.domain.importing import cdnow

__all__ = ["make_profile"]

REPO = Path(__file__).resolve().parents[4]
CDNOW = next(
    (p for p in (REPO / "data/cdnow", REPO.parent / "shared/data/cdnow") if (p / "cdnow_sample_2357cust.txt").exists()),
    None,
)


@pytest.fixture
def cdnow_file() -> Path:
    if CDNOW is None:
        pytest.skip("CDNOW sample not found next to the repository")
    return CDNOW / "cdnow_sample_2357cust.txt"


async def test_cdnow_sample_imports_once_and_matches_pandas(make_profile: object, cdnow_file: Path) -> None:
    stack: ProfileStack = await make_profile(audit=False)  # type: ignore[operator]
    lines = list(cdnow(cdnow_file.read_text().splitlines()))
    first = await run_import(stack.stub, stack.ws, lines)
    assert (first.rows, first.accepted, first.duplicates, first.rejected) == (6919, 6919, 0, 0)
    again = await run_import(stack.stub, stack.ws, list(cdnow(cdnow_file.read_text().splitlines())))
    assert (again.accepted, again.duplicates) == (0, 6919)

    count = await stack.stub.CountSegment(profile_pb2.CountSegmentRequest(workspace_id=stack.ws, name="prospect"))
    assert count.customers == 2357 and count.members == 0

    frame = pd.read_csv(cdnow_file, sep=r"\s+", header=None, names=["master", "sample", "day", "cds", "dollars"],
                        dtype={"day": str})
    frame["day"] = pd.to_datetime(frame["day"], format="%Y%m%d")
    expected = frame.groupby("master").agg(
        frequency=("dollars", "size"), monetary=("dollars", "sum"), first=("day", "min"), last=("day", "max")
    )
    assert len(expected) == 2357
    for master, row in expected.iterrows():
        response = await stack.stub.GetFeatures(
            profile_pb2.GetFeaturesRequest(workspace_id=stack.ws, customer_id=f"cdnow-{master}")
        )
        f = response.features
        assert f.frequency == row["frequency"], master
        assert f.monetary_total == pytest.approx(row["monetary"], abs=1e-6), master
        assert f.first_order_at.ToDatetime().date() == row["first"].date(), master
        assert f.last_order_at.ToDatetime().date() == row["last"].date(), master


def test_both_cdnow_layouts_give_the_same_events() -> None:
    sample = [" 00004 0001 19970101  2   29.33", " 00004 0001 19970101  1   10.00", " 00018 0002 19970102 1 9.5"]
    full = ["customer_id yyyymmdd cds dollars", "4 19970101 2 29.33", "4 19970101 1 10.00", "18 19970102 1 9.5"]
    a = [p.event for p in cdnow(sample)]
    b = [p.event for p in cdnow(full)]
    assert a == b
    assert [e.message_id for e in a] == ["cdnow-4-19970101-1", "cdnow-4-19970101-2", "cdnow-18-19970102-1"]
    assert a[0].properties["revenue"] == 29.33 and a[0].user_id == "cdnow-4"
