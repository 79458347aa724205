import pytest
from retain_channels.domain.retry import RetryPolicy


def test_ceiling_doubles_until_capped() -> None:
    policy = RetryPolicy(max_attempts=10, base_seconds=0.5, max_seconds=3.0)
    assert [policy.ceiling(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_keeps_delay_within_its_band() -> None:
    policy = RetryPolicy(base_seconds=1.0, max_seconds=100.0, jitter=0.5)
    assert policy.delay(3, rand=lambda: 0.0) == 4.0
    assert policy.delay(3, rand=lambda: 1.0) == 2.0
    assert policy.delay(3, rand=lambda: 0.5) == 3.0


def test_random_delays_spread_but_stay_in_band() -> None:
    policy = RetryPolicy(base_seconds=1.0, max_seconds=100.0, jitter=0.5)
    delays = {policy.delay(2) for _ in range(50)}
    assert len(delays) > 1
    assert all(1.0 <= d <= 2.0 for d in delays)


def test_no_jitter_is_deterministic() -> None:
    policy = RetryPolicy(base_seconds=0.2, jitter=0.0)
    assert policy.delay(2) == policy.delay(2) == 0.4


def test_exhausted_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"jitter": 1.5}, {"jitter": -0.1}])
def test_rejects_nonsense_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
