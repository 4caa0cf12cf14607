"""The real server through the official openai package: shapes, streaming, n, logprobs, seeds, stop, thinking."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.helpers import MODEL, NO_THINK, SERVED_CONTEXT, collect_stream, no_tags, think_bias, validate

HELLO = [{"role": "user", "content": "你好"}]


def test_plain_completion_shape(client, server) -> None:  # noqa: ANN001
    r = httpx.post(server.v1 + "/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 12},
                   timeout=60)
    assert r.status_code == 200
    body = r.json()
    validate("CreateChatCompletionResponse", body)
    assert body["id"].startswith("chatcmpl-") and body["model"] == MODEL
    c = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12)
    choice = c.choices[0]
    msg = choice.message
    assert msg.role == "assistant" and msg.refusal is None
    assert set(("reasoning", "reasoning_content")) <= set(msg.model_extra)
    no_tags(msg.content, msg.model_extra["reasoning"])
    assert choice.finish_reason in ("stop", "length")
    assert choice.model_extra["native_finish_reason"] in ("stop", "length")
    u = c.usage
    assert u.completion_tokens <= 12 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.completion_tokens_details.reasoning_tokens <= u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens is not None
    assert u.model_extra["cost"] > 0


def test_stream_with_usage_equals_non_stream_for_the_same_seed(client) -> None:  # noqa: ANN001
    kw = dict(model=MODEL, messages=HELLO, max_tokens=24, seed=1234, temperature=1.0)
    full = client.chat.completions.create(**kw)
    again = client.chat.completions.create(**kw)
    assert again.choices[0].message.content == full.choices[0].message.content  # seed reproducibility
    s = collect_stream(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert s["usage_last"] and s["usage"].completion_tokens == full.usage.completion_tokens
    assert s["usage"].completion_tokens_details.reasoning_tokens == \
        full.usage.completion_tokens_details.reasoning_tokens
    acc = s["choices"][0]
    msg = full.choices[0].message
    assert acc["content"] == (msg.content or "")
    assert acc["reasoning"] == (msg.model_extra["reasoning"] or "")
    assert acc["finish"] == full.choices[0].finish_reason
    other = client.chat.completions.create(**{**kw, "seed": 99})
    assert other.choices[0].message.content != full.choices[0].message.content


def test_n_choices(client) -> None:  # noqa: ANN001
    c = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10, n=2, **{"extra_body": NO_THINK})
    assert sorted(ch.index for ch in c.choices) == [0, 1]
    assert c.usage.completion_tokens <= 20
    s = collect_stream(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10, n=2,
                                                      stream=True, extra_body=NO_THINK))
    assert sorted(s["choices"]) == [0, 1] and all(a["finish"] for a in s["choices"].values())


def test_logprobs_align_with_content(client) -> None:  # noqa: ANN001
    kw = dict(model=MODEL, messages=HELLO, max_tokens=16, logprobs=True, top_logprobs=5, seed=5,
              extra_body=NO_THINK)
    c = client.chat.completions.create(**kw)
    content = c.choices[0].message.content or ""
    entries = c.choices[0].logprobs.content
    assert entries, "asked for logprobs"
    assert b"".join(bytes(e.bytes) for e in entries) == content.encode()
    for e in entries:
        assert len(e.top_logprobs) == 5 and e.logprob <= 0
        assert [t.logprob for t in e.top_logprobs] == sorted((t.logprob for t in e.top_logprobs), reverse=True)
    s = collect_stream(client.chat.completions.create(**kw, stream=True))
    assert [e.token for e in s["choices"][0]["logprobs"]] == [e.token for e in entries]


def test_stop_strings_cut_exactly(client) -> None:  # noqa: ANN001
    kw = dict(model=MODEL, messages=HELLO, max_tokens=30, seed=77, extra_body=NO_THINK)
    free = client.chat.completions.create(**kw).choices[0].message.content or ""
    assert len(free) > 8
    stop = free[5:7]
    cut = free[: free.find(stop)]
    c = client.chat.completions.create(**kw, stop=[stop, "never-appears-xyz"])
    assert c.choices[0].message.content == (cut or None) and c.choices[0].finish_reason == "stop"
    s = collect_stream(client.chat.completions.create(**kw, stop=stop, stream=True))
    assert s["choices"][0]["content"] == cut and s["choices"][0]["finish"] == "stop"


@pytest.mark.parametrize("off", [{"chat_template_kwargs": {"enable_thinking": False}},
                                 {"reasoning": {"enabled": False}}, {"reasoning": {"effort": "none"}}])
def test_thinking_off(client, off) -> None:  # noqa: ANN001
    c = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, extra_body=off)
    msg = c.choices[0].message
    assert msg.model_extra["reasoning"] is None and msg.model_extra["reasoning_content"] is None
    assert msg.content and c.usage.completion_tokens_details.reasoning_tokens == 0
    no_tags(msg.content)


def test_thinking_budget_closes_the_thought(client, server) -> None:  # noqa: ANN001
    body = {"reasoning": {"max_tokens": 6}}
    for stream in (False, True):
        kw = dict(model=MODEL, messages=HELLO, max_tokens=60, logit_bias=think_bias(server), extra_body=body)
        if stream:
            s = collect_stream(client.chat.completions.create(**kw, stream=True,
                                                              stream_options={"include_usage": True}))
            reasoning, content, usage = s["choices"][0]["reasoning"], s["choices"][0]["content"], s["usage"]
        else:
            c = client.chat.completions.create(**kw)
            reasoning, content, usage = (c.choices[0].message.model_extra["reasoning"],
                                         c.choices[0].message.content, c.usage)
        # The server ended the thought itself with the Qwen team's closing sentence, then the answer began.
        assert "Considering the limited time" in reasoning
        no_tags(reasoning, content)
        assert 6 < usage.completion_tokens_details.reasoning_tokens < 6 + 40
        assert usage.completion_tokens_details.reasoning_tokens < usage.completion_tokens


def test_reasoning_exclude_hides_but_counts(client, server) -> None:  # noqa: ANN001
    # The bias makes every token <think> (a tag, not text): the budget's closing sentence is the reasoning.
    for extra in ({"reasoning": {"exclude": True, "max_tokens": 4}},
                  {"include_reasoning": False, "reasoning": {"max_tokens": 4}}):
        c = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=30,
                                           logit_bias=think_bias(server), extra_body=extra)
        assert c.choices[0].message.model_extra["reasoning"] is None
        assert c.usage.completion_tokens_details.reasoning_tokens > 0


def test_cut_mid_thought_is_all_reasoning(client, server) -> None:  # noqa: ANN001
    c = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, logit_bias=think_bias(server),
                                       stop=["\n\n"])
    msg = c.choices[0].message
    assert c.choices[0].finish_reason == "length" and msg.content is None
    no_tags(msg.model_extra["reasoning"])


def test_models_report_the_yarn_context(client, server) -> None:  # noqa: ANN001
    models = client.models.list()
    [m] = [m for m in models.data if m.id == MODEL]
    assert m.model_extra["context_length"] == SERVED_CONTEXT
    assert client.models.retrieve(MODEL).id == MODEL
    assert "YaRN" in server.log()


def test_legacy_completions(client) -> None:  # noqa: ANN001
    c = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, logprobs=2)
    assert c.object == "text_completion" and c.choices[0].finish_reason in ("stop", "length")
    assert len(c.choices[0].logprobs.tokens) == c.usage.completion_tokens
    text = "".join(ch.choices[0].text for ch in client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=8, stream=True, seed=3) if ch.choices)
    assert text == client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8,
                                             seed=3).choices[0].text


def test_repeated_prefix_reports_cached_tokens(client, server) -> None:  # noqa: ANN001
    system = {"role": "system", "content": "You are a careful assistant. " * 12}
    kw = dict(model=MODEL, max_tokens=4, extra_body=NO_THINK)
    first = client.chat.completions.create(messages=[system, {"role": "user", "content": "one"}], **kw)
    second = client.chat.completions.create(messages=[system, {"role": "user", "content": "two"}], **kw)
    assert second.usage.prompt_tokens_details.cached_tokens >= 16  # at least one full block of the prefix
    assert second.usage.prompt_tokens_details.cached_tokens < second.usage.prompt_tokens
    assert first.usage.prompt_tokens == second.usage.prompt_tokens
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    assert float(text.split("\nqwen3_api_prefix_cache_hit_rate ")[1].split()[0]) > 0
