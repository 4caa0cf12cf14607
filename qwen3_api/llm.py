"""The offline API, as in vLLM: ``LLM(model).generate(prompts, sampling_params)``."""

from __future__ import annotations

import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from qwen3_api.engine.args import EngineArgs
from qwen3_api.engine.llm_engine import LLMEngine
from qwen3_api.engine.outputs import RequestOutput
from qwen3_api.engine.sampling_params import SamplingParams

PromptType = str | list[int] | dict[str, Any]
Conversation = list[dict[str, Any]]


@dataclass(slots=True)
class ChatMessage:
    """One sample's assistant message, parsed as the API would return it."""

    content: str | None
    reasoning: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str | None
    reasoning_tokens: int


@dataclass(slots=True)
class ChatOutput:
    """``LLM.chat``'s result for one conversation: the engine's output and one parsed message per sample."""

    output: RequestOutput
    messages: list[ChatMessage]


class LLM:
    """A model with its engine, for batch generation in-process.

    ``engine_args`` are the :class:`~qwen3_api.engine.args.EngineArgs` fields (kv_cache_memory,
    max_num_seqs, enable_prefix_caching, ...). The tokenizer is the checkpoint's tokenizer.json.
    """

    def __init__(self, model: str | Path, *, dtype: str | torch.dtype = "auto", **engine_args: Any) -> None:
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).removeprefix("torch.")
        self.engine = LLMEngine.from_engine_args(EngineArgs(model=str(model), dtype=dtype, **engine_args))
        self.tokenizer = self.engine.tokenizer
        self._ids = count()
        self._model = str(model)
        self._chat_tokenizer: Any = None

    @classmethod
    def from_engine(cls, engine: LLMEngine) -> LLM:
        """Wrap an engine built elsewhere (tests, benchmarks that share one loaded model)."""
        llm = cls.__new__(cls)
        llm.engine = engine
        llm.tokenizer = engine.tokenizer
        llm._ids = count()
        llm._model = engine.args.model
        llm._chat_tokenizer = None
        return llm

    def chat(
        self,
        messages: Conversation | Seq[Conversation],
        sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        tools: list[dict[str, Any]] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        use_tqdm: bool = True,
    ) -> list[ChatOutput]:
        """Chat with the checkpoint's own template, as ``/v1/chat/completions`` does: one conversation (a list
        of OpenAI-style messages) or a list of them. Each result holds the engine's output and, per sample, the
        answer split from its reasoning (``<think>``) and its tool calls. Thinking is on unless
        ``chat_template_kwargs={"enable_thinking": False}``."""
        from qwen3_api.chat.output import ChoiceProcessor
        from qwen3_api.chat.reasoning import ThinkState
        from qwen3_api.chat.template import ChatTemplate
        from qwen3_api.chat.tokens import ChatTokenizer
        from qwen3_api.model.loader import resolve_model_path

        if self._chat_tokenizer is None:
            # (a GGUF file: the directory derived from it, with the --tokenizer override the engine was given)
            self._chat_tokenizer = ChatTokenizer.from_dir(resolve_model_path(self._model, tokenizer=self.engine.args.tokenizer))
        tok = self._chat_tokenizer
        template = ChatTemplate(tok)
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        kwargs = chat_template_kwargs or {}
        prompts = [{"prompt_token_ids": template.encode(conv, tools, True, **kwargs)} for conv in conversations]
        think_state = ThinkState.ANSWER if template.thinking_mode == "never" else None
        results = []
        for prompt, out in zip(prompts, self.generate(prompts, sampling_params, use_tqdm=use_tqdm), strict=True):
            parsed = []
            for sample in out.outputs:
                proc = ChoiceProcessor(tok, prompt_ids=prompt["prompt_token_ids"], think_state=think_state, stop=None,
                                       parse_tool_calls=bool(tools), logprobs=False)
                proc.feed(sample.token_ids, None)
                final = proc.finish(sample.finish_reason)
                parsed.append(ChatMessage(final.content, final.reasoning, final.tool_calls, final.finish_reason,
                                          final.reasoning_tokens))
            results.append(ChatOutput(out, parsed))
        return results

    def generate(
        self,
        prompts: PromptType | Seq[PromptType],
        sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        """Generate for every prompt (a string, a list of token ids, or ``{"prompt_token_ids": [...]}``) and
        return one RequestOutput per prompt, in order, each with its samples' full token ids, text, logprobs
        and finish reason. ``sampling_params``: one for all prompts or a list with one per prompt."""
        prompt_list = self._prompt_list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            params_list = [sampling_params] * len(prompt_list)
        else:
            params_list = list(sampling_params)
            if len(params_list) != len(prompt_list):
                raise ValueError(
                    f"got {len(params_list)} SamplingParams for {len(prompt_list)} prompts: give one or one each"
                )
        ids = []
        try:
            for prompt, params in zip(prompt_list, params_list, strict=True):
                rid = f"offline-{next(self._ids)}"
                self.engine.add_request(rid, self._token_ids(prompt), params)
                ids.append(rid)
        except Exception:
            for rid in ids:
                self.engine.abort_request(rid)
            raise
        return self._run(ids, use_tqdm)

    def _run(self, ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        final: dict[str, RequestOutput] = {}
        bar = tqdm(total=len(ids), desc="generate", unit="req", disable=not use_tqdm, dynamic_ncols=True)
        start = time.perf_counter()
        tokens_before = self.engine.num_generated_tokens
        try:
            while self.engine.has_unfinished_requests():
                result = self.engine.step()
                for out in result.outputs:
                    if out.finished:
                        final[out.request_id] = out
                        bar.update(1)
                for _request_id, err in result.failures:
                    raise err
                if use_tqdm:
                    elapsed = max(time.perf_counter() - start, 1e-9)
                    rate = (self.engine.num_generated_tokens - tokens_before) / elapsed
                    bar.set_postfix_str(f"{rate:.1f} tok/s", refresh=False)
        except BaseException:
            # a failed step may have published blocks whose KV was never written: drop the prefix cache too
            self.engine.abort_all()
            raise
        finally:
            bar.close()
        outputs = [final[rid] for rid in ids]
        if self.tokenizer is not None:
            for out in outputs:
                for sample in out.outputs:
                    text_ids = sample.token_ids[:-1] if sample.stop_reason is not None else sample.token_ids
                    sample.text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        return outputs

    @staticmethod
    def _prompt_list(prompts: PromptType | Seq[PromptType]) -> list[PromptType]:
        if isinstance(prompts, str | dict):
            return [prompts]
        prompts = list(prompts)
        if prompts and all(isinstance(t, int) for t in prompts):
            return [prompts]  # one prompt given as token ids
        return prompts

    def _token_ids(self, prompt: PromptType) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("this checkpoint has no tokenizer.json: give prompts as token ids")
            return self.tokenizer.encode(prompt, add_special_tokens=False).ids
        if isinstance(prompt, dict):
            if "prompt_token_ids" not in prompt:
                raise ValueError('a dict prompt needs "prompt_token_ids"')
            return list(prompt["prompt_token_ids"])
        if isinstance(prompt, list | tuple) and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        raise ValueError(f"a prompt must be a string, a list of token ids or a dict, got {type(prompt).__name__}")
