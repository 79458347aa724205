from datetime import date

import pytest
from retain_scoring.data.cdnow import parse_lines, summarise

SAMPLE = """\
 00004 0001 19970101  2   29.33
 00004 0001 19970101  1   10.67
 00004 0001 19970118  2   29.73
 00004 0001 19970802  1   14.96
 00004 0001 19971212  2   26.48
 00021 0002 19970101  3   63.34
 00050 0003 19970301  1   11.00
 00050 0003 19971001  1   12.00
 00099 0004 19971005  1   99.00
"""

FULL = """\
customer_id date cds dollars
4 19970101 2 29.33
4 19970101 1 10.67
4 19970118 2 29.73
4 19970802 1 14.96
4 19971212 2 26.48
21 19970101 3 63.34
50 19970301 1 11.00
50 19971001 1 12.00
99 19971005 1 99.00
"""


@pytest.mark.parametrize("text", [SAMPLE, FULL], ids=["sample", "full"])
def test_both_layouts_summarise_alike(text: str) -> None:
    s = summarise(parse_lines(text.splitlines()), calibration_end=date(1997, 9, 30), holdout_end=date(1998, 6, 30))
    # Customer 99 first bought after calibration: not in the cohort.
    assert s.customer_ids == ["4", "21", "50"]
    # Same-day purchases merge: customer 4 has 2 repeat days in calibration, mean repeat spend of those.
    assert list(s.x) == [2.0, 0.0, 0.0]
    assert s.t_x[0] == pytest.approx((date(1997, 8, 2) - date(1997, 1, 1)).days / 7)
    assert s.T[2] == pytest.approx((date(1997, 9, 30) - date(1997, 3, 1)).days / 7)
    assert s.monetary[0] == pytest.approx((29.73 + 14.96) / 2) and s.monetary[1] == 0.0
    assert s.holdout_x is not None and list(s.holdout_x) == [1.0, 0.0, 1.0]


def test_cohort_weeks_keeps_early_first_purchases_only() -> None:
    s = summarise(parse_lines(SAMPLE.splitlines()), calibration_end=date(1997, 9, 30), cohort_weeks=4)
    assert s.customer_ids == ["4", "21"]


def test_bad_lines_name_the_line() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_lines(["4 19970101 1 2.0", "4 1997-01-02 1 2.0"])
    with pytest.raises(ValueError, match="line 1: expected"):
        parse_lines(["4 19970101 2.0"])
    with pytest.raises(ValueError, match="holdout_end"):
        summarise(parse_lines(["4 19970101 1 2.0"]), calibration_end=date(1997, 9, 30), holdout_end=date(1997, 9, 1))
