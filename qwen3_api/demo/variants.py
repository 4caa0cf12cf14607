"""The Qwen3-30B-A3B generations `make-tiny-model --variant` can imitate: config, template and sampling defaults.

- ``original`` (Qwen3-30B-A3B, April 2025): max_position_embeddings 40,960 (32,768 native + room to generate),
  rope_theta 1e6, one model for both modes: the template's ``enable_thinking`` switch.
- ``2507-instruct`` (Qwen3-30B-A3B-Instruct-2507): 262,144 native positions, rope_theta 1e7, never thinks; the
  template has no switch and no empty think block, and shows an earlier turn's reasoning only when it has some.
- ``2507-thinking`` (Qwen3-30B-A3B-Thinking-2507): the same config, always thinks; the generation prompt already
  opens the thought (``<|im_start|>assistant\\n<think>\\n``), so the model writes only ``...</think>``.

The two 2507 templates are the original Qwen3 chat format (chat_template.jinja) with exactly those
changes; tests/demo/test_demo_variants.py checks them against Qwen's own template edited the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qwen3_api.demo.tokenizer import demo_chat_template

_GENERATION_PROMPT = """{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""
_HISTORY_THOUGHT = "{%- if loop.index0 > ns.last_query and (loop.last or reasoning) %}"


@dataclass(frozen=True, slots=True)
class Variant:
    """What a checkpoint generation changes: its positions, rope base, template edits, recommended sampling."""

    name: str
    max_position_embeddings: int
    rope_theta: float
    generation: dict[str, Any] = field(default_factory=dict)
    generation_prompt: str = _GENERATION_PROMPT
    history_thought: str = _HISTORY_THOUGHT

    def chat_template(self, base: str | None = None) -> str:
        """The chat template of this generation (from the original Qwen3 format, ``base`` or the demo's)."""
        source = base if base is not None else demo_chat_template()
        if self.name == "original":
            return source
        if _GENERATION_PROMPT not in source or _HISTORY_THOUGHT not in source:
            raise ValueError("the base template is not the Qwen3 chat format this variant edits")
        header = f"{{#- Qwen3 chat format as the {self.name} checkpoints render it (see qwen3_api/demo/variants.py). -#}}\n"
        return header + source.replace(_GENERATION_PROMPT, self.generation_prompt).replace(
            _HISTORY_THOUGHT, self.history_thought)


VARIANTS: dict[str, Variant] = {
    "original": Variant("original", 40960, 1_000_000.0,
                        {"temperature": 0.6, "top_p": 0.95, "top_k": 20}),
    "2507-instruct": Variant(
        "2507-instruct", 262144, 10_000_000.0, {"temperature": 0.7, "top_p": 0.8, "top_k": 20},
        generation_prompt="{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}",
        history_thought="{%- if loop.index0 > ns.last_query and reasoning %}"),
    "2507-thinking": Variant(
        "2507-thinking", 262144, 10_000_000.0, {"temperature": 0.6, "top_p": 0.95, "top_k": 20},
        generation_prompt="{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n<think>\\n' }}\n"
                          "{%- endif %}"),
}


def get_variant(name: str) -> Variant:
    """The named variant, or a ValueError listing the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None
