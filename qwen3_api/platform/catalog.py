"""The model catalog: what is served, at what price, with which capabilities (OpenRouter's /models shape)."""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

DEFAULT_CATALOG = Path(__file__).with_name("default_catalog.toml")
_THOUSAND = Decimal(1000)
# OpenRouter's name for the cached-prompt price; in a catalog file it is per 1,000 tokens like every price there.
_CACHE_READ_KEYS = ("input_cache_read", "input_cache_read_per_1k")


@dataclass(slots=True)
class CatalogEntry:
    """One served model. Prices are per 1,000 tokens, exact decimals in ``currency``."""

    id: str
    name: str = ""
    description: str = ""
    context_length: int | None = None
    max_completion_tokens: int | None = None
    prompt_price: Decimal = Decimal(0)
    completion_price: Decimal = Decimal(0)
    # OpenRouter's input_cache_read, per 1,000 prompt tokens served from the prefix cache; None = the prompt price.
    cached_prompt_price: Decimal | None = None
    currency: str = "CNY"
    capabilities: list[str] = field(default_factory=list)
    supported_parameters: list[str] = field(default_factory=list)
    default_parameters: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "Qwen3"
    created: int = 0
    # An upstream OpenAI-compatible server instead of the local engine.
    base_url: str | None = None
    upstream_model: str | None = None
    api_key_env: str | None = None

    @property
    def is_upstream(self) -> bool:
        return self.base_url is not None

    @property
    def cache_read_price(self) -> Decimal:
        """Per 1,000 cached prompt tokens: ``input_cache_read`` when the catalog sets one, else the prompt price."""
        return self.prompt_price if self.cached_prompt_price is None else self.cached_prompt_price

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
        """The exact price of a generation: cached prompt tokens at ``cache_read_price``, the rest at the prompt
        price, completion tokens at the completion price."""
        cached = max(0, min(cached_tokens, prompt_tokens))
        total = (
            Decimal(prompt_tokens - cached) * self.prompt_price
            + Decimal(cached) * self.cache_read_price
            + Decimal(completion_tokens) * self.completion_price
        )
        return total / _THOUSAND

    def max_cost(self, prompt_tokens: int, max_tokens: int) -> Decimal:
        """The most a request can cost: what a credit reservation holds before the request runs (how much of the
        prompt the cache serves is known only later, so each prompt token at the dearer of its two prices)."""
        per_prompt = max(self.prompt_price, self.cache_read_price)
        return (Decimal(prompt_tokens) * per_prompt + Decimal(max_tokens) * self.completion_price) / _THOUSAND

    def to_openai(self) -> dict[str, Any]:
        """The /v1/models entry: OpenAI's list item plus OpenRouter's catalog fields."""
        pricing = {"prompt": str(self.prompt_price / _THOUSAND), "completion": str(self.completion_price / _THOUSAND),
                   "prompt_per_1k": str(self.prompt_price), "completion_per_1k": str(self.completion_price),
                   "input_cache_read": str(self.cache_read_price / _THOUSAND),
                   "input_cache_read_per_1k": str(self.cache_read_price), "currency": self.currency}
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.id.split("/")[0] if "/" in self.id else "qwen3-api",
            "name": self.name or self.id,
            "description": self.description,
            "context_length": self.context_length,
            "pricing": pricing,
            "architecture": {"input_modalities": ["text"], "output_modalities": ["text"],
                             "modality": "text->text", "tokenizer": self.tokenizer},
            "top_provider": {"context_length": self.context_length,
                             "max_completion_tokens": self.max_completion_tokens, "is_moderated": False},
            "supported_parameters": list(self.supported_parameters),
            "default_parameters": dict(self.default_parameters),
            "capabilities": list(self.capabilities),
        }


def _entry(raw: dict[str, Any]) -> CatalogEntry:
    def dec(key: str) -> Decimal | None:
        value = raw.get(key)
        return None if value is None else Decimal(str(value))

    known = {f for f in CatalogEntry.__dataclass_fields__}
    unknown = set(raw) - known - {"prompt_price_per_1k", "completion_price_per_1k", "cached_prompt_price_per_1k",
                                  *_CACHE_READ_KEYS}
    if unknown:
        raise ValueError(f"catalog entry {raw.get('id')!r}: unknown fields {sorted(unknown)}")
    if "id" not in raw:
        raise ValueError("catalog entry without an 'id'")
    values = {k: v for k, v in raw.items() if k in known}
    values["prompt_price"] = dec("prompt_price_per_1k") or dec("prompt_price") or Decimal(0)
    values["completion_price"] = dec("completion_price_per_1k") or dec("completion_price") or Decimal(0)
    # Explicit None checks: a cache-read price of 0 (a free cache) is a price, not "unset".
    cache_read = [dec(k) for k in (*_CACHE_READ_KEYS, "cached_prompt_price_per_1k", "cached_prompt_price")]
    values["cached_prompt_price"] = next((v for v in cache_read if v is not None), None)
    values.setdefault("created", int(time.time()))
    return CatalogEntry(**values)


@dataclass(slots=True)
class Catalog:
    """The served models by id, read from a TOML file (the built-in default when none is given)."""

    entries: dict[str, CatalogEntry]

    @classmethod
    def load(cls, path: str | Path | None = None) -> Catalog:
        """Read a catalog: TOML, or YAML for ``.yaml`` / ``.yml`` files (a top-level ``models`` list)."""
        file = Path(path or DEFAULT_CATALOG)
        text = file.read_text(encoding="utf-8")
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
            raise ValueError(f"catalog {file}: expected a top-level 'models' list")
        entries = [_entry(raw) for raw in data.get("models", [])]
        if not entries:
            raise ValueError(f"catalog {path or DEFAULT_CATALOG} lists no [[models]]")
        return cls({e.id: e for e in entries})

    def get(self, model_id: str) -> CatalogEntry | None:
        return self.entries.get(model_id)

    def local_entries(self) -> list[CatalogEntry]:
        return [e for e in self.entries.values() if not e.is_upstream]
