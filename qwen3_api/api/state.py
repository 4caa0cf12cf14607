"""What every route needs, held once per app: engine, catalog, gateway, settings, metrics, drain, chat resources."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

from fastapi import Request

from qwen3_api.api.drain import Drain
from qwen3_api.api.metrics import Metrics
from qwen3_api.api.settings import Settings
from qwen3_api.chat.template import ChatTemplate
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.engine.protocol import EngineClient
from qwen3_api.errors import APIError
from qwen3_api.platform.catalog import Catalog, CatalogEntry
from qwen3_api.platform.gateway import Gateway

# What /v1/models says of the demo model, served under the real model's id so the examples work unchanged.
DEMO_DESCRIPTION = ("DEMO, RANDOM WEIGHTS: the built-in tiny demo model (a 2-layer MoE whose weights are random, so "
                    "its answers are noise), served under this id so that clients and examples work unchanged. "
                    "Start the server with --model Qwen/Qwen3-30B-A3B to serve the real model.")


@dataclass(slots=True)
class AppState:
    """The app's parts. The tokenizer and template are read from ``settings.model_path`` on first use (create_app
    reads them at start-up, so no request pays for it)."""

    engine: EngineClient
    catalog: Catalog
    gateway: Gateway
    settings: Settings
    metrics: Metrics
    drain: Drain = field(default_factory=Drain)
    _tokenizer: ChatTokenizer | None = None
    _template: ChatTemplate | None = None
    _served: CatalogEntry | None = None

    @property
    def max_model_len(self) -> int:
        """The context in force (YaRN included), as the engine was built with it."""
        return int(self.engine.max_model_len)

    def entry(self, model_id: str) -> CatalogEntry:
        """The catalog entry a request names; the served one reports the context length in force."""
        found = self.catalog.get(model_id)
        if found is None:
            raise APIError(404, f"The model '{model_id}' does not exist or you do not have access to it.",
                           "not_found_error", param="model", code="model_not_found")
        if found.is_upstream:
            return found
        if model_id != self.settings.served_model_name:
            raise APIError(404, f"The model '{model_id}' is in the catalog but not served by this server "
                           f"(it serves '{self.settings.served_model_name}').", "not_found_error",
                           param="model", code="model_not_found")
        return self.served_entry()

    def served_entry(self) -> CatalogEntry:
        """The locally served entry with ``context_length`` set to the engine's ``max_model_len``."""
        if self._served is None:
            base = self.catalog.get(self.settings.served_model_name)
            assert base is not None  # create_app checked it
            served = dataclasses.replace(base, context_length=self.max_model_len,
                                         max_completion_tokens=base.max_completion_tokens or self.max_model_len)
            if self.settings.demo:
                served = dataclasses.replace(served, name=f"{base.name or base.id} (demo, random weights)",
                                             description=DEMO_DESCRIPTION)
            self._served = served
        return self._served

    def chat_tokenizer(self) -> ChatTokenizer:
        """The tokenizer facts of the served checkpoint (special ids, byte table, chat template), loaded once."""
        if self._tokenizer is None:
            path = self.settings.model_path
            if path is None:
                raise RuntimeError("Settings.model_path is needed to read the tokenizer and chat template")
            self._tokenizer = _load_tokenizer(str(path), self.engine.model_config.vocab_size)
        return self._tokenizer

    def chat_template(self) -> ChatTemplate:
        """The checkpoint's chat template, compiled once."""
        if self._template is None:
            self._template = ChatTemplate(self.chat_tokenizer())
        return self._template

    def visible_entries(self) -> list[CatalogEntry]:
        """What /v1/models lists: the served model and every upstream entry."""
        return [self.served_entry(), *(e for e in self.catalog.entries.values() if e.is_upstream)]


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str, vocab: int | None) -> ChatTokenizer:
    # Building the byte table takes ~0.5 s; apps over the same checkpoint (tests, reloads) share it.
    return ChatTokenizer.from_dir(path, model_vocab_size=vocab)


def get_state(request: Request) -> AppState:
    """FastAPI dependency: the app's state."""
    return request.app.state.api
