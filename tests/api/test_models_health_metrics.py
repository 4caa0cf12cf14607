"""/v1/models from the catalog with the context in force, /health, /metrics, /openapi.json."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.helpers import MODEL, text_script


@pytest.fixture()
def h(make_harness: Any, chat_tok: Any) -> Any:
    return make_harness(text_script(chat_tok, "<think>\nhm\n</think>\n\nYes.<|im_end|>"), max_model_len=1234)


def test_models_list_and_get(h: Any, openai_schema: Any) -> None:
    body = h.client.get("/v1/models").json()
    assert not [e.message for e in openai_schema("ListModelsResponse").iter_errors(body)]
    [card] = body["data"]
    assert card["id"] == MODEL and card["object"] == "model"
    assert card["context_length"] == 1234 and card["top_provider"]["context_length"] == 1234
    assert card["pricing"]["prompt"] == "0.0000012" and card["pricing"]["currency"] == "CNY"
    assert "reasoning" in card["supported_parameters"] and card["architecture"]["tokenizer"] == "Qwen3"
    one = h.client.get(f"/v1/models/{MODEL}").json()
    assert one == card


def test_health(h: Any) -> None:
    r = h.client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["max_model_len"] == 1234
    assert (r.json()["demo"], r.json()["weights"]) == (False, "checkpoint")
    card = h.client.get("/v1/models").json()["data"][0]
    assert "demo" not in card["name"] and "30.5B" in card["description"]  # a real model keeps its catalog text


def test_metrics_count_requests_tokens_and_engine_load(h: Any) -> None:
    h.chat(max_tokens=20)
    h.chat(temperature=9)
    h.chat_stream(max_tokens=20)
    text = h.client.get("/metrics").text
    assert 'qwen3_api_requests_total{endpoint="/v1/chat/completions",status="200"} 2.0' in text
    assert 'qwen3_api_requests_total{endpoint="/v1/chat/completions",status="400"} 1.0' in text
    n_tokens = len(h.engine.script([], None, 0))
    assert f"qwen3_api_completion_tokens_total {2.0 * n_tokens}" in text
    reasoning = [ln for ln in text.splitlines() if ln.startswith("qwen3_api_reasoning_tokens_total")]
    assert float(reasoning[0].split()[-1]) > 0
    assert "qwen3_api_time_to_first_token_seconds_count 2.0" in text
    assert "qwen3_api_inter_token_latency_seconds_count" in text
    for gauge in ("qwen3_api_num_requests_running 0.0", "qwen3_api_num_requests_waiting 0.0",
                  "qwen3_api_kv_cache_usage 0.0", "qwen3_api_prefix_cache_hit_rate 0.0"):
        assert gauge in text


def test_openapi_document(h: Any) -> None:
    doc = h.client.get("/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"):
        assert path in doc["paths"]
    props = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    for field in ("reasoning", "verbosity", "chat_template_kwargs", "top_a", "tools", "response_format"):
        assert field in props
