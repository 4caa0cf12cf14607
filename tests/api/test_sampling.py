"""The request -> thinking options / budget / SamplingParams mapping, and dispatch details."""

from __future__ import annotations

from typing import Any

import pytest

from qwen3_api.api.app import Settings
from qwen3_api.api.request_params import completion_budget
from qwen3_api.api.schemas import ChatCompletionRequest
from qwen3_api.api.thinking import EFFORT_RATIOS, thinking_options
from qwen3_api.errors import APIError
from qwen3_api.platform.catalog import Catalog, CatalogEntry
from tests.api.helpers import MODEL, RecordingGateway, ScriptedEngine, text_script


def _req(**kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(model=MODEL, messages=[{"role": "user", "content": "x"}], **kw)


@pytest.mark.parametrize(("effort", "ratio"), sorted(EFFORT_RATIOS.items()))
def test_effort_is_a_share_of_max_tokens(effort: str, ratio: float) -> None:
    for req in (_req(reasoning={"effort": effort}), _req(reasoning_effort=effort)):
        t = thinking_options(req, 1000)
        assert t.enabled and t.budget == int(1000 * ratio)


def test_budget_exclude_and_switches() -> None:
    assert thinking_options(_req(reasoning={"max_tokens": 77}), 1000).budget == 77
    assert thinking_options(_req(), 1000).budget is None and thinking_options(_req(), 10).enabled
    assert not thinking_options(_req(reasoning={"effort": "none"}), 10).enabled
    assert not thinking_options(_req(reasoning_effort="none"), 10).enabled
    assert not thinking_options(_req(reasoning={"enabled": False}), 10).enabled
    assert not thinking_options(_req(chat_template_kwargs={"enable_thinking": False}), 10).enabled
    assert thinking_options(_req(reasoning={"exclude": True}), 10).exclude
    assert thinking_options(_req(include_reasoning=False), 10).exclude
    assert not thinking_options(_req(include_reasoning=True), 10).exclude
    # Thinking off: no budget to apply.
    assert thinking_options(_req(reasoning={"enabled": False, "max_tokens": 5}), 10).budget is None


def test_completion_budget() -> None:
    req = _req()
    assert completion_budget(req, None, 100, 1000, "messages") == 900
    assert completion_budget(req, 900, 100, 1000, "messages") == 900
    with pytest.raises(APIError) as info:
        completion_budget(req, 901, 100, 1000, "messages")
    assert info.value.code == "context_length_exceeded" and info.value.param == "max_tokens"
    with pytest.raises(APIError) as info:
        completion_budget(req, None, 1000, 1000, "messages")
    assert info.value.param == "messages"


def test_budget_reaches_the_engine_as_a_constraint(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, "<think>\nx\n</think>\n\nok<|im_end|>"))
    h.chat(max_tokens=100, reasoning={"effort": "low"})
    assert h.engine.requests[-1][1].constraint_factory is not None
    h.chat(max_tokens=100)
    assert h.engine.requests[-1][1].constraint_factory is None
    r = h.chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("response_format")


def test_soft_switches_pass_through_the_template(make_harness: Any, chat_tok: Any) -> None:
    h = make_harness(text_script(chat_tok, "ok<|im_end|>"))
    h.chat(messages=[{"role": "user", "content": "hello /no_think"}])
    assert "hello /no_think<|im_end|>" in chat_tok.decode(h.engine.requests[-1][0], skip_special_tokens=False)


def test_custom_served_name_and_upstream_down(chat_tok: Any, qwen3_tokenizer_dir: Any, tmp_path: Any) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text('[[models]]\nid = "local/mine"\nprompt_price_per_1k = "1"\ncompletion_price_per_1k = "2"\n'
                       '[[models]]\nid = "far/away"\nbase_url = "http://127.0.0.1:9/v1"\n')
    from fastapi.testclient import TestClient

    from qwen3_api.api.app import create_app

    gw = RecordingGateway()
    app = create_app(ScriptedEngine(text_script(chat_tok, "ok<|im_end|>")), Catalog.load(catalog), gw,
                     Settings(served_model_name="local/mine", model_path=str(qwen3_tokenizer_dir)))
    with TestClient(app) as client:
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert ids == ["local/mine", "far/away"]
        body = {"model": "local/mine", "messages": [{"role": "user", "content": "x"}]}
        assert client.post("/v1/chat/completions", json=body).json()["usage"]["cost"] > 0
        r = client.post("/v1/chat/completions", json={**body, "model": "far/away"})
        assert r.status_code == 502 and r.json()["error"]["type"]
        assert [s["status"] for s in gw.settled] == ["completed", "error"]
    unknown = create_app(ScriptedEngine(text_script(chat_tok, "ok")), Catalog.load(catalog), gw,
                         Settings(served_model_name="not/listed"))
    assert isinstance(unknown.state.api.catalog.get("not/listed"), CatalogEntry)

