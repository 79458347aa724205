import asyncio
import base64
from datetime import UTC, datetime, timedelta

import pytest
from retain_gateway.domain import apikey
from retain_gateway.domain.apikey import Principal, extract_key
from retain_gateway.domain.authcache import AuthCache


def test_generated_key_has_the_documented_shape_and_parses_back() -> None:
    new = apikey.generate()
    assert new.plaintext.startswith(f"rk_{new.prefix}_")
    assert len(new.prefix) == 8
    assert apikey.parse(new.plaintext) == (new.prefix, new.plaintext.split("_", 2)[2])
    assert len(new.plaintext.split("_", 2)[2]) == 32


def test_hash_is_sha256_of_the_whole_key_and_never_the_key() -> None:
    new = apikey.generate()
    assert new.key_hash == apikey.hash_key(new.plaintext)
    assert len(new.key_hash) == 64 and new.plaintext not in new.key_hash
    assert apikey.generate().key_hash != new.key_hash


def test_secret_with_underscores_still_parses() -> None:
    key = "rk_0a1b2c3d_" + "_-" * 16
    assert apikey.parse(key) == ("0a1b2c3d", "_-" * 16)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "rk_0a1b2c3d",
        "sk_0a1b2c3d_" + "a" * 32,
        "rk_0A1B2C3D_" + "a" * 32,
        "rk_0a1b2c3_" + "a" * 33,
        "rk_0a1b2c3d_" + "a" * 31,
        "rk_0a1b2c3d_" + "a" * 31 + "!",
    ],
)
def test_malformed_keys_do_not_parse(key: str) -> None:
    assert apikey.parse(key) is None


@pytest.mark.parametrize(
    ("workspace_id", "ok"),
    [("ws_demo", True), ("ws_brand-1", True), ("demo", False), ("ws_", False), ("ws_Demo", False)],
)
def test_workspace_ids(workspace_id: str, ok: bool) -> None:
    assert apikey.valid_workspace_id(workspace_id) is ok


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_key_is_read_from_bearer_basic_and_header() -> None:
    assert extract_key(authorization="Bearer rk_x", api_key_header=None) == "rk_x"
    assert extract_key(authorization="bearer   rk_x ", api_key_header=None) == "rk_x"
    assert extract_key(authorization=basic("rk_w"), api_key_header=None) == "rk_w"
    assert extract_key(authorization=None, api_key_header="rk_h") == "rk_h"
    # The header wins over Authorization, which some proxies rewrite.
    assert extract_key(authorization="Bearer rk_x", api_key_header="rk_h") == "rk_h"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer   ", "Token rk_x", "Basic not-base64!", basic(""), "Basic " + "////"],
)
def test_missing_or_unusable_credentials_give_no_key(authorization: str | None) -> None:
    assert extract_key(authorization=authorization, api_key_header=None) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def principal(key_id: str) -> Principal:
    return Principal(workspace_id="ws_a", key_id=key_id, roles=frozenset({"ingest"}))


def test_cache_entries_expire_after_ttl() -> None:
    clock = Clock()
    cache = AuthCache(ttl=5, maxsize=10, clock=clock)
    cache.put("h1", principal("k1"))
    clock.now += 4.9
    assert cache.get("h1") == principal("k1")
    clock.now += 0.2
    assert cache.get("h1") is None and len(cache) == 0


def test_cache_is_bounded_and_evicts_least_recently_used() -> None:
    cache = AuthCache(ttl=60, maxsize=2, clock=Clock())
    cache.put("h1", principal("k1"))
    cache.put("h2", principal("k2"))
    assert cache.get("h1") is not None
    cache.put("h3", principal("k3"))
    assert cache.get("h2") is None
    assert cache.get("h1") is not None and cache.get("h3") is not None


def test_invalidate_drops_every_entry_of_a_key() -> None:
    cache = AuthCache(ttl=60, maxsize=10, clock=Clock())
    cache.put("h1", principal("k1"))
    cache.put("h2", principal("k2"))
    cache.invalidate_key("k1")
    assert cache.get("h1") is None and cache.get("h2") is not None


def test_cache_never_outlives_the_key_expiry() -> None:
    clock = Clock()
    cache = AuthCache(ttl=60, maxsize=10, clock=clock)
    cache.put("h1", principal("k1"), expires_at=datetime.now(UTC) + timedelta(seconds=2))
    clock.now += 3
    assert cache.get("h1") is None


def test_zero_ttl_disables_the_cache() -> None:
    cache = AuthCache(ttl=0, maxsize=10, clock=Clock())
    cache.put("h1", principal("k1"))
    assert cache.get("h1") is None


def test_a_lookup_that_began_before_an_invalidation_is_not_cached() -> None:
    cache = AuthCache(ttl=60, maxsize=10, clock=Clock())
    began = cache.generation
    cache.invalidate_key("k1")
    cache.put("h1", principal("k1"), generation=began)
    assert cache.get("h1") is None
    cache.put("h1", principal("k1"), generation=cache.generation)
    assert cache.get("h1") == principal("k1")


async def test_invalidation_stops_requests_joining_a_lookup_under_way() -> None:
    cache = AuthCache(ttl=60, maxsize=10, clock=Clock())
    cache.pending["h1"] = asyncio.get_running_loop().create_future()
    cache.invalidate_key("k1")
    assert not cache.pending
