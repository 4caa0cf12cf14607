"""Shared checks for the end-to-end tests (random weights: structure, never words)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

MODEL = "qwen/qwen3-30b-a3b"
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}
TAGS = ("<think>", "</think>", "<tool_call>", "</tool_call>")
_SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "reference" / "openai-chat-schema.json"
_DEFS = json.loads(_SCHEMA.read_text())["$defs"]


def validate(name: str, obj: Any) -> None:
    """Assert ``obj`` matches OpenAI's schema ``name``."""
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": _DEFS}).iter_errors(obj)]
    assert not errors, errors


def no_tags(*texts: str | None) -> None:
    for t in texts:
        for tag in TAGS:
            assert tag not in (t or ""), (tag, t)


def collect_stream(chunks: Any) -> dict[str, Any]:
    """Concatenate an SDK stream's deltas (choice 0 unless n > 1), keep the usage chunk."""
    out: dict[int, dict[str, Any]] = {}
    usage = None
    last_was_usage = False
    for ch in chunks:
        # exclude_unset: exactly the fields the server sent (the SDK fills the rest with None).
        validate("CreateChatCompletionStreamResponse", ch.model_dump(exclude_unset=True))
        if ch.usage is not None:
            usage = ch.usage
            assert ch.choices == []
            last_was_usage = True
            continue
        last_was_usage = False
        for c in ch.choices:
            acc = out.setdefault(c.index, {"content": "", "reasoning": "", "tool_calls": {}, "finish": None,
                                           "logprobs": [], "native": None})
            d = c.delta
            acc["content"] += d.content or ""
            extra = d.model_extra or {}
            acc["reasoning"] += extra.get("reasoning") or ""
            assert (extra.get("reasoning") or "") == (extra.get("reasoning_content") or "")
            for tc in d.tool_calls or []:
                slot = acc["tool_calls"].setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function is not None:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
            if c.logprobs is not None and c.logprobs.content:
                acc["logprobs"] += c.logprobs.content
            if c.finish_reason is not None:
                acc["finish"] = c.finish_reason
                acc["native"] = (c.model_extra or {}).get("native_finish_reason")
    return {"choices": out, "usage": usage, "usage_last": last_was_usage}


def think_bias(server: Any) -> dict[str, float]:
    """A logit bias that makes ``<think>`` certain: random weights rarely open a thought by themselves."""
    from tokenizers import Tokenizer

    tid = Tokenizer.from_file(str(server.model_dir / "tokenizer.json")).token_to_id("<think>")
    return {str(tid): 100.0}
