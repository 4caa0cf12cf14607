"""Issue 14's platform parts: the cached-prompt price, the endpoint on every ledger row, stored responses per key."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.keys import hash_key
from qwen3_api.platform.principal import Principal
from qwen3_api.platform.response_store import StoredResponse

TOML = """
[[models]]
id = "a/cheap-cache"
prompt_price_per_1k = "0.0012"
completion_price_per_1k = "0.00375"
input_cache_read = "0.0003"

[[models]]
id = "b/default"
prompt_price_per_1k = "0.0012"
completion_price_per_1k = "0.00375"

[[models]]
id = "c/free-cache"
prompt_price_per_1k = "0.0012"
input_cache_read_per_1k = "0"
"""


def test_input_cache_read_prices_cached_prompt_tokens(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(TOML)
    cat = Catalog.load(tmp_path / "c.toml")
    cheap, default, free = cat.get("a/cheap-cache"), cat.get("b/default"), cat.get("c/free-cache")
    # 1,000 prompt tokens, 400 of them from the prefix cache, 100 completion tokens: exact decimals.
    assert cheap.cost(1000, 100, 400) == (600 * Decimal("0.0012") + 400 * Decimal("0.0003")
                                          + 100 * Decimal("0.00375")) / 1000
    assert default.cost(1000, 100, 400) == default.cost(1000, 100, 0)  # default: the prompt price
    assert free.cost(1000, 0, 1000) == 0 and free.cost(1000, 0, 400) == 600 * Decimal("0.0012") / 1000
    assert cheap.cost(10, 0, 50) == 10 * Decimal("0.0003") / 1000  # never more cached than prompt tokens
    assert cheap.max_cost(1000, 100) == default.max_cost(1000, 100)  # the hold assumes no cache hit
    assert cheap.to_openai()["pricing"]["input_cache_read"] == "3E-7"
    assert default.to_openai()["pricing"]["input_cache_read"] == default.to_openai()["pricing"]["prompt"]
    assert default.to_openai()["pricing"]["input_cache_read_per_1k"] == "0.0012"


def test_ledger_rows_record_the_endpoint_and_stored_responses_are_per_key(db: Database) -> None:
    gw = Gateway(db)
    key, rec = gw.keys.create("dialects", credit=Decimal("1"))
    entry = Catalog.load().get("qwen/qwen3-30b-a3b")

    async def run() -> None:
        principal = await gw.authenticate(f"Bearer {key}")
        for gen_id, endpoint in (("msg_1", "/v1/messages"), ("resp_1", "/v1/responses")):
            async with gw.meter(principal, entry, prompt_tokens=10, max_tokens=5, generation_id=gen_id,
                                streamed=False, endpoint=endpoint) as meter:
                meter.usage.completion_tokens = 5
                meter.usage.cached_tokens = 4
        for gen_id, endpoint in (("msg_1", "/v1/messages"), ("resp_1", "/v1/responses")):
            row = await gw.get_generation(principal, gen_id)
            assert row.endpoint == endpoint and row.to_dict()["endpoint"] == endpoint
            assert row.cached_tokens == 4 and row.cost == entry.cost(10, 5, 4)
        stored = StoredResponse(id="resp_1", body={"id": "resp_1", "output": ["€"]}, input_items=[{"id": "a"}],
                                conversation=[{"id": "a"}, {"id": "b"}])
        await gw.responses.put(principal.key_hash, stored)
        assert await gw.responses.get(principal.key_hash, "resp_1") == stored
        other = Principal(key_hash=hash_key("sk-other"), key_id=None, name="other", label="sk-…othr")
        assert await gw.responses.get(other.key_hash, "resp_1") is None
        assert await gw.responses.delete(other.key_hash, "resp_1") is False
        assert await gw.responses.delete(principal.key_hash, "resp_1") is True
        assert await gw.responses.get(principal.key_hash, "resp_1") is None
        await gw.close()

    asyncio.run(run())


@pytest.mark.parametrize("bad", ["input_cache_read = 'x'"])
def test_a_bad_cache_price_is_refused(tmp_path: Path, bad: str) -> None:
    (tmp_path / "c.toml").write_text(f'[[models]]\nid = "x"\n{bad}\n')
    with pytest.raises(Exception):  # noqa: B017 - Decimal's own error: the CLI reports it as a bad catalog
        Catalog.load(tmp_path / "c.toml")
