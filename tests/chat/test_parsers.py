"""Detokenizer, stop strings, reasoning split and tool calls on real Qwen3 token ids, streamed and all at once."""

from __future__ import annotations

import json

import pytest

from qwen3_api.chat.detokenizer import IncrementalDetokenizer
from qwen3_api.chat.output import ChoiceProcessor
from qwen3_api.chat.reasoning import ThinkState
from qwen3_api.chat.stop import StopChecker
from qwen3_api.chat.template import ChatTemplate

TEXTS = ["Hello, world!", "你好，世界！这是一个测试。龘靐齉", "emoji 😀👍🏽🇫🇷 mixed 中文 and ascii", "naïve café — “quotes”\n\ttab"]


def _run(tok, ids, step, **kw):
    """Feed ``ids`` ``step`` at a time; return the final choice and the joined stream deltas."""
    proc = ChoiceProcessor(tok, **kw)
    reasoning, content, calls, lps, stops = "", "", {}, [], []
    deltas = [proc.feed(ids[i : i + step], [{t: -0.25, 0: -3.0} for t in ids[i : i + step]])
              for i in range(0, len(ids), step)]
    final = proc.finish("stop")
    for d in deltas + [final.delta]:
        reasoning += d.reasoning
        content += d.content
        lps += d.logprobs
        stops.append(d.stop_matched)
        for tc in d.tool_calls:
            entry = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            if tc.id is not None:
                assert entry["id"] is None, "id and name are sent once per call"
                entry["id"], entry["name"] = tc.id, tc.name
            entry["arguments"] += tc.arguments
    assert (reasoning or None) == final.reasoning and (content or None) == final.content
    if final.logprobs is not None:
        assert lps == final.logprobs
    joined = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
              for _, c in sorted(calls.items())]
    assert (joined or None) == final.tool_calls
    return final, [s for s in stops if s]


@pytest.mark.parametrize("text", TEXTS)
def test_detokenizer_never_emits_broken_utf8(tok, text):
    ids = tok.encode(text + "<|im_end|>")
    d = IncrementalDetokenizer(tok)
    pieces = [d.feed(i) for i in ids] + [d.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text == tok.decode(ids)
    keep = IncrementalDetokenizer(tok, skip_special_tokens=False)
    assert "".join(keep.feed(i) for i in ids) == text + "<|im_end|>"


def test_some_tokens_really_split_characters(tok):
    split = [i for t in TEXTS for i in tok.encode(t) if _broken(tok.bytes_of(i))]
    assert len(split) >= 4


def _broken(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_detokenizer_keeps_think_tags_as_text_when_fed(tok):
    ids = tok.encode("<think>x</think>")
    assert ids[0] == tok.think_start_id and ids[-1] == tok.think_end_id
    d = IncrementalDetokenizer(tok)
    assert "".join(d.feed(i) for i in ids) == "<think>x</think>"  # not special: the router, not the detok, hides them


def test_detokenizer_replaces_truly_invalid_bytes(tok):
    d = IncrementalDetokenizer(tok)
    assert d.feed_bytes(b"\xe4\xbd") == "" and d.has_pending
    assert d.feed_bytes(b"\xa0") == "你"
    assert d.feed_bytes(b"\xff") == "\ufffd"
    assert d.feed_bytes(b"\xf0\x9f") == "" and d.flush() == "\ufffd"


def test_stop_checker_holds_back_and_reports():
    s = StopChecker(["STOP", "\n\n"])
    out = [s.push(p) for p in ["abc S", "T", "OPx"]]
    assert [o.text for o in out] == ["abc ", "", ""] and out[2].matched == "STOP"
    assert s.push("more").text == "" and s.done
    s = StopChecker("xyz")
    assert s.push("ab xy").text == "ab " and s.push("q").text == "xyq" and s.flush() == ""
    s = StopChecker(None)
    assert s.push("anything STOP").text == "anything STOP"


@pytest.mark.parametrize("step", [1, 2, 3, 1000])
def test_reasoning_split_thinking_on(tok, step):
    ids = tok.encode("<think>\nThe user greets me. 你好 😀\n</think>\n\nHello! 你好 😀<|im_end|>")
    final, _ = _run(tok, ids, step, think_state=ThinkState.START, logprobs=True)
    assert final.reasoning == "The user greets me. 你好 😀"
    assert final.content == "Hello! 你好 😀"
    assert final.reasoning_tokens == ids.index(tok.think_end_id) + 1
    # one logprob entry per content token: no reasoning, no "\n\n" separator, no <|im_end|>
    assert "".join(e["token"] for e in final.logprobs).encode() == b"".join(bytes(e["bytes"]) for e in final.logprobs)
    assert b"".join(bytes(e["bytes"]) for e in final.logprobs).decode() == final.content
    assert all(e["top_logprobs"] == [] for e in final.logprobs)


@pytest.mark.parametrize("step", [1, 1000])
def test_thinking_off_prompt_gives_content_only(tok, step):
    prompt = ChatTemplate(tok).encode([{"role": "user", "content": "hi"}], enable_thinking=False)
    ids = tok.encode("Hi there.<|im_end|>")
    final, _ = _run(tok, ids, step, prompt_ids=prompt)
    assert final.content == "Hi there." and final.reasoning is None and final.reasoning_tokens == 0


@pytest.mark.parametrize("step", [1, 1000])
def test_empty_thought_after_no_think_is_null(tok, step):
    prompt = ChatTemplate(tok).encode([{"role": "user", "content": "hi /no_think"}])
    ids = tok.encode("<think>\n\n</think>\n\nHi.<|im_end|>")
    final, _ = _run(tok, ids, step, prompt_ids=prompt)
    assert final.reasoning is None and final.content == "Hi." and final.reasoning_tokens == 0


@pytest.mark.parametrize("cut", range(1, 12))
def test_cut_mid_thought_never_leaks_tags(tok, cut):
    ids = tok.encode("<think>\nStep one.\nStep two.\n</think>\n\nDone.")[:cut]
    for step in (1, 1000):
        proc = ChoiceProcessor(tok, think_state=ThinkState.START)
        proc.feed(ids[:cut]) if step == 1000 else [proc.feed([i]) for i in ids]
        final = proc.finish("length")
        assert final.finish_reason == "length"
        for field in (final.content or "", final.reasoning or ""):
            assert "<think>" not in field and "</think>" not in field
        if tok.think_end_id not in ids:
            assert final.content is None


@pytest.mark.parametrize("step", [1, 2, 1000])
def test_stop_strings_apply_to_content_only(tok, step):
    ids = tok.encode("<think>\nPara one.\n\nPara two.\n</think>\n\nAnswer one.\n\nAnswer two.<|im_end|>")
    final, stops = _run(tok, ids, step, think_state=ThinkState.START, stop=["\n\n"], logprobs=True)
    assert final.reasoning == "Para one.\n\nPara two."
    assert final.content == "Answer one." and final.finish_reason == "stop" and final.stop == "\n\n"
    assert stops == ["\n\n"]
    # the token ".\n\n" holds both the last content character and the stop string: it is a content token
    assert [e["token"] for e in final.logprobs] == ["Answer", " one", ".\n\n"]


@pytest.mark.parametrize("step", [1, 1000])
def test_stop_string_spanning_tokens(tok, step):
    ids = tok.encode("The end is THE_END_MARK and more<|im_end|>")
    assert not any("THE_END_MARK" in tok.bytes_of(i).decode() for i in ids)  # it does span tokens
    final, _ = _run(tok, ids, step, think_state=ThinkState.ANSWER, stop="THE_END_MARK")
    assert final.content == "The end is " and final.stop == "THE_END_MARK"


def test_stop_never_streamed_partially(tok):
    ids = tok.encode("ab<<<STOP>>>cd")
    proc = ChoiceProcessor(tok, think_state=ThinkState.ANSWER, stop=["<<<STOP>>>"])
    streamed = "".join(proc.feed([i]).content for i in ids)
    assert streamed == "ab" and proc.finish("abort").finish_reason == "stop"


CALLS = ('<think>\nI need two tools.\n</think>\n\nLet me check.\n\n<tool_call>\n{"name": "get_weather", '
         '"arguments": {"city": "Paris", "days": 3}}\n</tool_call>\n<tool_call>\n{"name": "get_time", '
         '"arguments": {"tz": "CET"}}\n</tool_call><|im_end|>')


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_parallel_tool_calls_stream_equals_final(tok, step):
    final, _ = _run(tok, tok.encode(CALLS), step, think_state=ThinkState.START, parse_tool_calls=True)
    assert final.finish_reason == "tool_calls" and final.content == "Let me check."
    assert final.reasoning == "I need two tools."
    names = [c["function"]["name"] for c in final.tool_calls]
    assert names == ["get_weather", "get_time"]
    assert [json.loads(c["function"]["arguments"]) for c in final.tool_calls] == [{"city": "Paris", "days": 3},
                                                                                  {"tz": "CET"}]
    assert all(c["id"].startswith("call_") and len(c["id"]) == 29 for c in final.tool_calls)


def test_two_choices_have_independent_state(tok):
    """n=2: interleaved feeding of two processors, one token per step, gives each its own calls."""
    a_ids = tok.encode(CALLS)
    b_ids = tok.encode('<think>\nok\n</think>\n\n<tool_call>\n{"name": "f", "arguments": {"x": [1, 2]}}\n'
                       "</tool_call><|im_end|>")
    pa, pb = (ChoiceProcessor(tok, think_state=ThinkState.START, parse_tool_calls=True) for _ in range(2))
    for i in range(max(len(a_ids), len(b_ids))):
        if i < len(a_ids):
            pa.feed([a_ids[i]])
        if i < len(b_ids):
            pb.feed([b_ids[i]])
    fa, fb = pa.finish("stop"), pb.finish("stop")
    assert len(fa.tool_calls) == 2 and len(fb.tool_calls) == 1
    assert json.loads(fb.tool_calls[0]["function"]["arguments"]) == {"x": [1, 2]}


def test_tool_call_inside_reasoning_is_reasoning(tok):
    ids = tok.encode('<think>\nMaybe <tool_call>\n{"name": "f", "arguments": {}}\n</tool_call> no.\n</think>\n\nNo call.')
    final, _ = _run(tok, ids, 1, think_state=ThinkState.START, parse_tool_calls=True)
    assert final.tool_calls is None and final.content == "No call." and "<tool_call>" in final.reasoning
    assert final.finish_reason == "stop"


@pytest.mark.parametrize("step", [1, 1000])
def test_malformed_tool_call_falls_back_to_content(tok, step):
    ids = tok.encode("Sure.<tool_call>\nnot json at all\n</tool_call><|im_end|>")
    final, _ = _run(tok, ids, step, think_state=ThinkState.ANSWER, parse_tool_calls=True)
    assert final.tool_calls is None and final.finish_reason == "stop"
    assert final.content == "Sure.<tool_call>\nnot json at all\n</tool_call>"


def test_tool_call_without_parsing_stays_text(tok):
    ids = tok.encode('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>')
    final, _ = _run(tok, ids, 1, think_state=ThinkState.ANSWER, parse_tool_calls=False)
    assert final.tool_calls is None and final.content.startswith("<tool_call>")


def test_logprobs_top_k_and_message_shape(tok):
    ids = tok.encode("Yes.")
    proc = ChoiceProcessor(tok, think_state=ThinkState.ANSWER, logprobs=True, top_logprobs=2)
    proc.feed(ids, [{ids[0]: -0.1, 5: -2.0, 7: -3.0}, {ids[1]: -1.5, 9: -0.5}])
    final = proc.finish("stop")
    assert [e["logprob"] for e in final.logprobs] == [-0.1, -1.5]
    assert [t["logprob"] for t in final.logprobs[0]["top_logprobs"]] == [-0.1, -2.0]
    assert [t["logprob"] for t in final.logprobs[1]["top_logprobs"]] == [-0.5, -1.5]
    msg = final.message()
    assert msg["content"] == "Yes." and msg["reasoning"] is None and msg["reasoning_content"] is None
    assert msg["refusal"] is None and "tool_calls" not in msg


RICH = ("<think>\nFirst 你好.\n\nThen 😀 <tool_call> in thought.\n</think>\n\nHere 中文 😀.\n\nMore text."
        '\n\n<tool_call>\n{"name": "f", "arguments": {"q": "a\\n\\nb 你好"}}\n</tool_call><|im_end|>')


@pytest.mark.parametrize("stop", [None, ["\n\n"], ["好", "More"]])
def test_every_cut_point_streams_like_the_whole(tok, stop):
    """Peer pitfall #2: any max_tokens cut, with and without stop strings: no tags in content, and the
    one-token-at-a-time stream equals the all-at-once result."""
    ids = tok.encode(RICH)
    for cut in range(1, len(ids) + 1):
        results = []
        for step in (1, cut):
            final, _ = _run(tok, ids[:cut], step, think_state=ThinkState.START, stop=stop, parse_tool_calls=True,
                            logprobs=True)
            for field in (final.content or "", final.reasoning or ""):
                assert "<think>" not in field and "</think>" not in field
            assert "<tool_call>" not in (final.content or "")
            results.append((final.content, final.reasoning, final.finish_reason, final.logprobs,
                            [(c["function"]["name"], c["function"]["arguments"]) for c in final.tool_calls or []]))
        assert results[0] == results[1], cut
