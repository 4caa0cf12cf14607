"""The checkpoint's own chat template, rendered exactly as transformers' ``apply_chat_template`` does.

The jinja2 environment copies transformers (utils/chat_template_utils.py): ImmutableSandboxedEnvironment with
trim_blocks and lstrip_blocks, the loopcontrols extension, a ``tojson`` filter that does not HTML-escape
(``json.dumps`` with ``ensure_ascii=False``), ``raise_exception``, ``strftime_now``, and the special tokens
(``eos_token`` ...) as variables. Messages are first normalised from the OpenAI request shape to what templates
read: keys with None dropped, text parts joined, ``developer`` shown as ``system``, and earlier turns' reasoning
(``reasoning`` or ``reasoning_content``) passed as ``reasoning_content``.

Multi-turn prefix property (prompt caching), tested in tests/chat/test_template.py:
- thinking off: turn N's prompt up to ``<|im_start|>assistant\n``, then the generated answer tokens, are a prefix
  of turn N+1's prompt; only the prompt's empty ``<think>\n\n</think>\n\n`` (4 tokens) is not re-rendered.
- thinking on, inside one user query (tool loops): prompt + generated tokens are an exact prefix of the next
  prompt, because the template keeps the reasoning of turns after the last user message.
- thinking on, after a new user message: the template drops the earlier thought, so only the old prompt is a
  prefix (the previous answer's tokens are not); no server-side trick can change that without changing the
  template the model was trained with.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.errors import invalid


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # transformers' override: jinja's own tojson HTML-escapes <, >, & and ' which would change the prompt.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _TemplateNamespace(jinja2.utils.Namespace):
    # As transformers: namespaces reject underscore attributes so a template cannot reach CPython internals.
    def __init__(*args: Any, **kwargs: Any) -> None:
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore attributes: {name!r}")


@lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    """Compile a chat template in transformers' environment (cached by source)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _TemplateNamespace
    return env.from_string(source)


def _text_of(content: Any, param: str) -> Any:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise invalid(f"content part of type {kind!r} is not supported (text only)", param)
        return "".join(parts)
    raise invalid("content must be a string or a list of text parts", param)


def _plain(value: Any) -> Any:
    # Pydantic models and other objects become plain JSON data, as transformers does before rendering.
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def normalize_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """OpenAI request messages -> the dicts the template reads (see the module docstring)."""
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(messages):
        msg = _plain(raw)
        if not isinstance(msg, dict) or "role" not in msg:
            raise invalid("each message needs a role", f"messages[{i}]")
        # As transformers: a None field (content=None next to tool_calls) is treated as absent.
        msg = {k: v for k, v in msg.items() if v is not None}
        role = msg["role"]
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise invalid(f"unknown role {role!r}", f"messages[{i}].role")
        msg["role"] = role
        if "content" in msg:
            msg["content"] = _text_of(msg["content"], f"messages[{i}].content")
        reasoning = msg.get("reasoning_content", msg.get("reasoning"))
        if isinstance(reasoning, str):
            msg["reasoning_content"] = reasoning
        msg.pop("reasoning", None)
        for call in msg.get("tool_calls") or []:
            # Arguments stay as sent: the template pastes a string verbatim (the model's own text, so the next
            # prompt reuses the cached tokens) and serialises a mapping with tojson.
            fn = call.get("function", call) if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise invalid("tool_calls[].function.name is required", f"messages[{i}].tool_calls")
        out.append(msg)
    return out


class ChatTemplate:
    """Renders a model's chat template; ``render`` gives the prompt text, ``encode`` its token ids."""

    def __init__(self, tok: ChatTokenizer, source: str | None = None) -> None:
        self._tok = tok
        template = source if source is not None else tok.config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
            named = {t["name"]: t["template"] for t in template}
            template = named.get("tool_use") or named.get("default")
        if not template:
            raise ValueError("the tokenizer_config.json has no chat_template")
        self.source: str = template
        self._compiled = compile_template(template)
        self.thinking_mode: str = self._thinking_mode()

    def _thinking_mode(self) -> str:
        """``switch`` (enable_thinking decides: the original Qwen3), ``always`` (the generation prompt opens the
        thought: Thinking-2507) or ``never`` (no thinking at all: Instruct-2507, whose template ignores the switch).

        Read by rendering a probe conversation both ways, so it follows the checkpoint's own template.
        """
        probe = [{"role": "user", "content": "ping"}]
        try:
            on = self.render(probe, enable_thinking=True)
            off = self.render(probe, enable_thinking=False)
        except Exception:  # noqa: BLE001 - an unusual template: let each prompt's own tail decide
            return "switch"
        if on != off:
            return "switch"
        generation_prompt = on.rsplit("<|im_start|>", 1)[-1]
        return "always" if "<think>" in generation_prompt else "never"

    def render(
        self,
        messages: list[Any],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **kwargs: Any,
    ) -> str:
        """The prompt text, byte-identical to transformers' ``apply_chat_template(..., tokenize=False)``.

        ``kwargs`` are chat_template_kwargs such as ``enable_thinking``; they override the special-token variables.
        """
        if not messages:
            raise invalid("messages must not be empty", "messages")
        chat = normalize_messages(messages)
        variables = {**self._tok.special_tokens_map(), **_plain(kwargs)}
        try:
            return self._compiled.render(
                messages=chat,
                tools=_plain(tools) if tools else None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
        except jinja2.exceptions.TemplateError as e:
            raise invalid(f"the chat template rejected the messages: {e}", "messages") from e

    def encode(
        self,
        messages: list[Any],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **kwargs: Any,
    ) -> list[int]:
        """Token ids of the rendered prompt (special-token text becomes the special tokens)."""
        return self._tok.encode(self.render(messages, tools, add_generation_prompt, **kwargs))
