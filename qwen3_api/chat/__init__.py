"""The chat layer: everything textual above token ids (template, detokenizing, stop strings, reasoning split,
thinking budget, tool calls, structured output). See chat/output.py for the per-choice interface the API uses."""

from qwen3_api.chat.output import ChoiceDelta, ChoiceProcessor, FinalChoice
from qwen3_api.chat.reasoning import ThinkState, initial_think_state
from qwen3_api.chat.template import ChatTemplate
from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.chat.tool_calls import ParsedToolCall, ParsedToolCallDelta

__all__ = [
    "ChatTemplate",
    "ChatTokenizer",
    "ChoiceProcessor",
    "ChoiceDelta",
    "FinalChoice",
    "ThinkState",
    "ParsedToolCall",
    "ParsedToolCallDelta",
    "initial_think_state",
]
