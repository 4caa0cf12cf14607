"""Request bodies of the tokenizer endpoints, in vLLM's shapes (``/tokenize``, ``/detokenize``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from qwen3_api.api.schema_parts import FieldError, Lenient
from qwen3_api.api.schemas import ChatMessage, Tool


class TokenizeRequest(Lenient):
    """A ``prompt`` (raw text), or chat ``messages`` rendered with the checkpoint's template as a chat request
    renders them (``add_generation_prompt`` true, thinking per ``chat_template_kwargs.enable_thinking``)."""

    model: str | None = None
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    tools: list[Tool] | None = None
    # vLLM's default: true for a prompt; for messages the template writes every special token itself (and
    # Qwen's tokenizer adds none of its own), so it changes nothing there.
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise FieldError("prompt", "send 'prompt' (text) or 'messages' (a chat), one of them")
        if self.continue_final_message:
            raise FieldError("continue_final_message", "continue_final_message is not supported: the template "
                             "renders whole turns")
        return self


class DetokenizeRequest(Lenient):
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0)]]
