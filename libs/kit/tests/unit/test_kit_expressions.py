import pytest
from retain_decision.domain.offers import KNOWN_NAMES
from retain_kit.expressions import ExpressionError, compile_expression

NS = {
    "churn_risk": 0.72,
    "frequency": 4,
    "recency_days": 40.0,
    "lifecycle_stage": "at_risk",
    "segments": ("vip", "bangkok"),
    "monetary_total": 5200.0,
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("", True),
        ("churn_risk > 0.5 and frequency >= 2", True),
        ("churn_risk > 0.8 or frequency > 10", False),
        ("not churn_risk > 0.8", True),
        ('lifecycle_stage in ("lapsed", "at_risk")', True),
        ('lifecycle_stage not in ["lapsed", "churned"]', True),
        ('"vip" in segments', True),
        ('"gold" in segments', False),
        ("20 <= recency_days < 45", True),
        ("20 <= recency_days < 30", False),
        ("monetary_total / frequency > 1000", True),
        ("monetary_total * churn_risk - 100 > 3600", True),
        ("-frequency < 0", True),
        ("frequency + 1 == 5", True),
        ("True", True),
    ],
)
def test_evaluates_whitelisted_expressions(source: str, expected: bool) -> None:
    assert compile_expression(source).evaluate(NS) is expected


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os').system('id')",
        "open('/etc/passwd')",
        "churn_risk.__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "segments[0] == 'vip'",
        "[x for x in segments]",
        "lambda: 1",
        "frequency ** 1000000",
        "frequency // 2 == 2",
        "frequency % 2 == 0",
        "frequency if churn_risk else 0",
        "f'{frequency}' == '4'",
        "__builtins__",
        "_private > 1",
        "frequency := 3",
        "{'a': 1}",
        "frequency in [recency_days]",
        "None",
        "frequency & 1",
        "import os",
        "churn_risk >",
    ],
)
def test_rejects_anything_outside_the_whitelist(source: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(source)


def test_unknown_names_are_rejected_at_definition_time_when_vocabulary_given() -> None:
    with pytest.raises(ExpressionError, match="churn_rsik"):
        compile_expression("churn_rsik > 0.5", known_names=KNOWN_NAMES)
    assert compile_expression("affinity_beauty > 0.3", known_names=KNOWN_NAMES, known_prefixes=("affinity_",))


def test_runtime_errors_raise_instead_of_guessing() -> None:
    with pytest.raises(ExpressionError, match="unknown name"):
        compile_expression("value_at_risk > 100").evaluate(NS)
    with pytest.raises(ExpressionError, match="division by zero"):
        compile_expression("frequency / 0 > 1").evaluate(NS)
    with pytest.raises(ExpressionError, match="cannot compare"):
        compile_expression("lifecycle_stage > 3").evaluate(NS)
    with pytest.raises(ExpressionError, match="not a number"):
        compile_expression("lifecycle_stage + 1 > 3").evaluate(NS)


def test_length_and_depth_are_bounded() -> None:
    with pytest.raises(ExpressionError):
        compile_expression("frequency > 1 and " * 500 + "True")
    with pytest.raises(ExpressionError):
        compile_expression("-" * 100 + "frequency > 0")
