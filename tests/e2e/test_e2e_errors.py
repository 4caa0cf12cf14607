"""Every error case through the SDK and raw HTTP, the seed document's own examples, and client disconnects."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest
import requests

from tests.e2e.helpers import MODEL, SERVED_CONTEXT, validate

SEED_DOC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "seed-api-doc.txt"
HOSTED = "https://wcode.net/api/gpt/v1"


def _err(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    validate("ErrorResponse", body)
    return body["error"]


@pytest.mark.parametrize(("kw", "param"), [
    ({"temperature": 5}, "temperature"), ({"top_p": 2}, "top_p"), ({"n": 9}, "n"),
    ({"max_tokens": 0}, "max_tokens"), ({"top_logprobs": 3}, "top_logprobs"),
    ({"extra_body": {"reasoning": {"effort": "high", "max_tokens": 5}}}, "reasoning"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}},
     "response_format.json_schema.schema"),
])
def test_bad_parameters_are_400_with_param(client, kw, param) -> None:  # noqa: ANN001
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], **kw)
    assert info.value.status_code == 400
    assert _err(info.value)["param"] == param


def test_context_length_exceeded(client) -> None:  # noqa: ANN001
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=SERVED_CONTEXT)
    assert _err(info.value)["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello " * SERVED_CONTEXT}])
    assert _err(info.value)["code"] == "context_length_exceeded"


def test_unknown_model_and_oversized_body(client, server) -> None:  # noqa: ANN001
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nobody/nothing", messages=[{"role": "user", "content": "x"}])
    assert _err(info.value)["code"] == "model_not_found"
    r = httpx.post(server.v1 + "/chat/completions", timeout=30,
                   json={"model": MODEL, "messages": [{"role": "user", "content": "x" * 300_000}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_unknown_fields_and_structured_outputs_flag_are_ignored(client) -> None:  # noqa: ANN001
    c = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=3,
                                       extra_body={"structured_outputs": True, "provider": {"sort": "price"},
                                                   "top_a": 0.1, "min_p": 0.05, "repetition_penalty": 1.1,
                                                   "verbosity": "low"})
    assert c.choices[0].finish_reason in ("stop", "length")


def _seed_payload() -> dict:
    doc = SEED_DOC.read_text()
    m = re.search(r"--data '(\{.*?\n\})'", doc, re.S)
    assert m, "the seed document's curl example"
    return json.loads(m.group(1))


def test_seed_curl_example(server) -> None:  # noqa: ANN001
    payload = _seed_payload()
    assert payload == {"model": MODEL, "messages": [{"role": "user", "content": "你好"}]}
    payload["max_tokens"] = 16  # random weights: keep it short (the doc's request leaves the length open)
    out = subprocess.run(["curl", "-sS", "--request", "POST", server.v1 + "/chat/completions",
                          "--header", "Content-Type: application/json", "--header", "Authorization: Bearer API_KEY",
                          "--data", json.dumps(payload, ensure_ascii=False)],
                         capture_output=True, text=True, timeout=60, check=True)
    body = json.loads(out.stdout)
    validate("CreateChatCompletionResponse", body)
    # The fields of the document's example response, with the same types.
    for key in ("id", "model", "object", "created", "choices", "usage"):
        assert key in body
    choice = body["choices"][0]
    assert {"logprobs", "finish_reason", "native_finish_reason", "index", "message"} <= set(choice)
    assert {"role", "content", "refusal", "reasoning"} <= set(choice["message"])
    assert {"prompt_tokens", "completion_tokens", "total_tokens"} <= set(body["usage"])


def test_seed_requests_example(server) -> None:  # noqa: ANN001
    doc = SEED_DOC.read_text()
    assert 'response = requests.post(url, json=payload, headers=headers)' in doc
    url = server.v1 + "/chat/completions"  # the doc's https://wcode.net/api/gpt/v1/chat/completions
    payload = {**_seed_payload(), "max_tokens": 16}
    headers = {"Authorization": "Bearer API_KEY", "content-type": "application/json"}
    response = requests.post(url, json=payload, headers=headers, timeout=60)
    text = json.dumps(response.json(), indent=4, ensure_ascii=False)
    assert response.status_code == 200 and '"object": "chat.completion"' in text


def test_seed_openai_sdk_example(server) -> None:  # noqa: ANN001
    assert f'base_url="{HOSTED}"' in SEED_DOC.read_text()
    client = openai.OpenAI(base_url=server.v1, api_key="API_KEY")
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "你好"}],
                                                max_tokens=8)
    assert isinstance(completion.choices[0].message.content, str)


def _gauge(server, name: str) -> float:  # noqa: ANN001
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def test_disconnect_mid_stream_aborts_and_frees_kv(server) -> None:  # noqa: ANN001
    body = {"model": MODEL, "messages": [{"role": "user", "content": "write forever"}], "stream": True,
            "max_tokens": 3000, "chat_template_kwargs": {"enable_thinking": False}, "min_p": 0.0}
    with httpx.stream("POST", server.v1 + "/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        got = 0
        lines = r.iter_lines()
        gen_id = None
        for line in lines:
            got += line.startswith("data: ")
            if gen_id is None and line.startswith("data: "):
                gen_id = json.loads(line[6:])["id"]
            if got >= 5:
                # Still connected: the sequence holds KV blocks.
                assert _gauge(server, "qwen3_api_num_requests_running") >= 1
                assert _gauge(server, "qwen3_api_kv_cache_usage") > 0
                break
        lines.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 10
    while _gauge(server, "qwen3_api_num_requests_running") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gauge(server, "qwen3_api_num_requests_running") == 0
    assert _gauge(server, "qwen3_api_kv_cache_usage") == 0
    # One ledger row, settled as cancelled, billed for what was generated before the client left.
    row = httpx.get(server.v1 + "/generation", params={"id": gen_id}, timeout=10).json()["data"]
    assert row["status"] == "cancelled" and row["streamed"] is True
    assert 4 <= row["tokens_completion"] < 3000 and float(row["total_cost"]) > 0
