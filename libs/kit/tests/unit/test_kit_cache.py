import time

from retain_kit.cache import TtlCache


def test_values_expire_and_can_be_forgotten() -> None:
    cache = TtlCache[int](0.05)
    cache.put("a", 1)
    assert cache.get("a") == 1
    cache.forget("a")
    assert cache.get("a") is None
    cache.put("b", 2)
    time.sleep(0.06)
    assert cache.get("b") is None


def test_zero_ttl_disables_caching() -> None:
    cache = TtlCache[int](0)
    cache.put("a", 1)
    assert cache.get("a") is None
