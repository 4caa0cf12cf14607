"""A chat request turned into what the engine and the chat layer need: prompt ids, SamplingParams, parsers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qwen3_api.api.constraints import build_constraint_factory
from qwen3_api.api.sampling import ThinkingOptions, completion_budget, thinking_options, to_sampling_params
from qwen3_api.api.schemas import VERBOSITY_INSTRUCTIONS, ChatCompletionRequest, NamedToolChoice
from qwen3_api.api.state import AppState
from qwen3_api.chat.output import ChoiceProcessor
from qwen3_api.chat.reasoning import ThinkState
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.platform.catalog import CatalogEntry


@dataclass(slots=True)
class PreparedChat:
    prompt_ids: list[int]
    params: SamplingParams
    thinking: ThinkingOptions
    n: int
    new_processor: Callable[[], ChoiceProcessor]


def apply_verbosity(messages: list[dict[str, Any]], verbosity: str | None) -> list[dict[str, Any]]:
    """Append the verbosity instruction to the system prompt (a new one when there is none); medium: no-op."""
    instruction = VERBOSITY_INSTRUCTIONS.get(verbosity or "medium")
    if instruction is None:
        return messages
    if messages and messages[0]["role"] in ("system", "developer"):
        first = dict(messages[0])
        content = first.get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content)
        first["content"] = f"{content}\n\n{instruction}" if content else instruction
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _tool_choice(req: ChatCompletionRequest) -> str | dict[str, Any]:
    if req.tool_choice is None:
        return "auto" if req.tools else "none"
    if isinstance(req.tool_choice, NamedToolChoice):
        return req.tool_choice.model_dump()
    return req.tool_choice


def prepare_chat(state: AppState, req: ChatCompletionRequest, entry: CatalogEntry) -> PreparedChat:
    """Render the prompt, check it fits, and map every request field onto the engine and the parsers."""
    tok: ChatTokenizer = state.chat_tokenizer()
    messages = apply_verbosity([m.model_dump(exclude_none=True) for m in req.messages], req.verbosity)
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    tool_choice = _tool_choice(req)
    # Thinking on/off must be known to render; the budget needs max_tokens, which needs the prompt length.
    enabled = thinking_options(req, 1).enabled
    kwargs = dict(req.chat_template_kwargs or {})
    kwargs["enable_thinking"] = enabled
    template = state.chat_template()
    prompt_ids = template.encode(messages, tools, True, **kwargs)
    max_tokens = completion_budget(req, req.limit(), len(prompt_ids), state.max_model_len, "messages")
    thinking = thinking_options(req, max_tokens)
    # A checkpoint that never thinks (Instruct-2507): the switch is a no-op and everything is the answer.
    think_state = ThinkState.ANSWER if template.thinking_mode == "never" else None
    thinking.enabled = enabled and think_state is None
    factory = build_constraint_factory(tok, prompt_ids=prompt_ids, tools=tools, tool_choice=tool_choice,
                                       parallel_tool_calls=req.parallel_tool_calls is not False,
                                       response_format=req.response_format, thinking_budget=thinking.budget,
                                       max_tokens=max_tokens, think_state=think_state)
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    params = to_sampling_params(req, max_tokens=max_tokens, vocab_size=tok.model_vocab_size,
                                defaults=entry.default_parameters, logprobs=logprobs, constraint_factory=factory)
    stop = req.stop_list()
    parse_tools = bool(tools) and tool_choice != "none"

    def new_processor() -> ChoiceProcessor:
        return ChoiceProcessor(tok, prompt_ids=prompt_ids, think_state=think_state, stop=stop,
                               parse_tool_calls=parse_tools,
                               logprobs=bool(req.logprobs), top_logprobs=req.top_logprobs or 0)

    return PreparedChat(prompt_ids=prompt_ids, params=params, thinking=thinking, n=req.n,
                        new_processor=new_processor)
