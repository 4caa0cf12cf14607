"""The tokenizer endpoints: text or a chat to token ids and back, and the prompt a chat request would run.

All free (no meter, no ledger row) and behind the same keys. ``render`` runs the chat service's own
``prepare_chat`` (template, context check, thinking budget, grammars compiled), so what it returns is exactly what
``POST /v1/chat/completions`` with the same body would feed the engine, and a request that would fail fails
here with the same 400.
"""

from __future__ import annotations

from typing import Any

from qwen3_api.api.schemas import ChatCompletionRequest
from qwen3_api.api.schemas_tokenize import DetokenizeRequest, TokenizeRequest
from qwen3_api.api.serving_chat import chat_prompt, prepare_chat
from qwen3_api.api.state import AppState
from qwen3_api.api.thinking import thinking_enabled
from qwen3_api.errors import invalid
from qwen3_api.platform.principal import Principal


class TokenizeService:
    """POST /tokenize, POST /detokenize, POST /v1/chat/completions/render."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def _check_model(self, model: str | None, principal: Principal) -> str:
        name = model or self.state.settings.served_model_name
        entry = self.state.entry(name)
        self.state.gateway.authorize_model(principal, entry.id)
        if entry.is_upstream:
            raise invalid(f"The model '{entry.id}' is served upstream: its tokenizer is not known here.", "model")
        return entry.id

    def tokenize(self, req: TokenizeRequest, principal: Principal) -> dict[str, Any]:
        model = self._check_model(req.model, principal)
        tok = self.state.chat_tokenizer()
        if req.messages is not None:
            chat = ChatCompletionRequest(model=model, messages=req.messages, tools=req.tools,
                                         chat_template_kwargs=req.chat_template_kwargs)
            if req.add_generation_prompt:
                ids = chat_prompt(self.state, chat)
            else:  # the conversation alone, without the opening of the assistant's turn
                kwargs = {**(req.chat_template_kwargs or {}), "enable_thinking": thinking_enabled(chat)}
                tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
                ids = self.state.chat_template().encode([m.model_dump(exclude_none=True) for m in req.messages],
                                                        tools, False, **kwargs)
        else:
            add = True if req.add_special_tokens is None else req.add_special_tokens
            ids = tok.tokenizer.encode(req.prompt or "", add_special_tokens=add).ids
        return {"count": len(ids), "max_model_len": self.state.max_model_len, "tokens": ids,
                "token_strs": [tok.tokenizer.id_to_token(i) or "" for i in ids] if req.return_token_strs else None}

    def detokenize(self, req: DetokenizeRequest, principal: Principal) -> dict[str, Any]:
        self._check_model(req.model, principal)
        tok = self.state.chat_tokenizer()
        for i, tid in enumerate(req.tokens):
            if tid >= tok.vocab_size:
                raise invalid(f"token id {tid} is outside the vocabulary (0..{tok.vocab_size - 1})", f"tokens[{i}]")
        return {"prompt": tok.decode(req.tokens, skip_special_tokens=False)}

    def render(self, req: ChatCompletionRequest, principal: Principal) -> dict[str, Any]:
        """The prompt text and ids a chat request runs, with the completion budget and thinking it would get."""
        entry = self.state.entry(req.model)
        self.state.gateway.authorize_model(principal, entry.id)
        if entry.is_upstream:
            raise invalid(f"The model '{entry.id}' is served upstream: its template is not known here.", "model")
        prep = prepare_chat(self.state, req, entry)
        return {"model": entry.id, "prompt": self.state.chat_tokenizer().decode(prep.prompt_ids,
                                                                                skip_special_tokens=False),
                "prompt_token_ids": prep.prompt_ids, "count": len(prep.prompt_ids),
                "max_model_len": self.state.max_model_len, "max_tokens": prep.params.max_tokens,
                "thinking": {"enabled": prep.thinking.enabled, "budget": prep.thinking.budget}}
