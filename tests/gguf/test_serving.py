"""`qwen3-api serve --model FILE.gguf`: the whole app over a GGUF model (the real engine, the converter's files),
chat with thinking on and off for the original and 2507 templates, the catalog's quantization, startup errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gguf
import pytest
from fastapi.testclient import TestClient

from qwen3_api.api.serve import build_app
from qwen3_api.cli import build_parser
from qwen3_api.demo.variants import get_variant
from tests.gguf.helpers import DENSE_BF16, MOE_Q8_0, write_gguf


def serve_app(tmp_path: Path, model: Path, *extra: str) -> Any:
    args = build_parser().parse_args(["serve", "--model", str(model), "--no-auth", "--port", "0",
                                      "--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}",
                                      "--kv-cache-memory", "0.01", "--max-model-len", "512", *extra])
    return build_app(args)


def chat(client: TestClient, model: str, **kw: Any) -> dict[str, Any]:
    r = client.post("/v1/chat/completions", json={"model": model, "max_tokens": 12, "temperature": 0, "seed": 1,
                                                  "messages": [{"role": "user", "content": "hello there"}], **kw})
    assert r.status_code == 200, r.text
    return r.json()


def test_original_template_thinking_on_and_off_and_the_quantization(tmp_path: Path) -> None:
    with TestClient(serve_app(tmp_path, MOE_Q8_0)) as client:
        [card] = client.get("/v1/models").json()["data"]
        assert card["quantization"] == "Q8_0" and card["hosting"] == "local"
        assert client.get(f"/v1/models/{card['id']}").json()["quantization"] == "Q8_0"
        on = chat(client, card["id"])
        off = chat(client, card["id"], chat_template_kwargs={"enable_thinking": False})
        for body in (on, off):
            assert body["usage"]["completion_tokens"] >= 1
        # thinking on: the prompt ends with "<|im_start|>assistant\n" (the model may open a thought);
        # off: the empty thought is in the prompt, so the prompt is longer by exactly those tokens
        assert off["usage"]["prompt_tokens"] > on["usage"]["prompt_tokens"]
        r = client.post("/v1/completions", json={"model": card["id"], "prompt": "The", "max_tokens": 4})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize("variant", ["2507-instruct", "2507-thinking"])
def test_2507_templates(tmp_path: Path, variant: str) -> None:
    if variant == "2507-instruct":
        path = DENSE_BF16  # the converter kept the checkpoint's 2507-instruct template
    else:
        path = write_gguf(tmp_path / "thinking.gguf", types="Q8_0", layers=1, hidden=64, head_dim=16, inter=64,
                          file_type=gguf.LlamaFileType.MOSTLY_Q8_0,
                          extra={"tokenizer.chat_template": get_variant(variant).chat_template()})
    with TestClient(serve_app(tmp_path, path)) as client:
        [card] = client.get("/v1/models").json()["data"]
        assert card["quantization"] == ("BF16" if variant == "2507-instruct" else "Q8_0")
        body = chat(client, card["id"])
        on = body["usage"]["prompt_tokens"]
        off = chat(client, card["id"], chat_template_kwargs={"enable_thinking": False})["usage"]["prompt_tokens"]
        assert on == off  # neither 2507 template has the switch
        message = body["choices"][0]["message"]
        if variant == "2507-thinking":  # the prompt opens the thought: what the model writes is reasoning first
            assert message.get("reasoning_content") or message.get("reasoning") or body["choices"][0][
                "finish_reason"] == "length"
        else:
            assert not (message.get("reasoning_content") or message.get("reasoning"))


def run_serve(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QWEN3_API_HOME": str(tmp_path / "home"), "QWEN3_API_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "qwen3_api.cli", "serve", "--no-auth", "--port", "0",
                           "--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}", *argv],
                          capture_output=True, text=True, env=env, timeout=300)


def test_serve_refuses_an_unsupported_file_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(bad, "llama")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    proc = run_serve(tmp_path, "--model", str(bad))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("qwen3-api: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "unsupported GGUF architecture 'llama'" in errors[0]


def test_offline_llm_on_a_gguf_file() -> None:
    """LLM("FILE.gguf"): the same path offline; greedy chat gives the same tokens twice and ends or runs out."""
    from qwen3_api.engine.sampling_params import SamplingParams
    from qwen3_api.llm import LLM

    llm = LLM(str(MOE_Q8_0), max_model_len=256)
    params = SamplingParams(max_tokens=8, temperature=0)
    messages = [{"role": "user", "content": "hi"}]
    [a] = llm.chat(messages, params, chat_template_kwargs={"enable_thinking": False})
    [b] = llm.chat(messages, params, chat_template_kwargs={"enable_thinking": False})
    assert a.output.outputs[0].token_ids == b.output.outputs[0].token_ids
    assert len(a.output.outputs[0].token_ids) >= 1 and a.output.prompt_token_ids[-4:] == b.output.prompt_token_ids[-4:]


def test_tokenizer_override_over_http(tmp_path: Path) -> None:
    """--tokenizer DIR: its chat template is the one served (here the 2507-instruct one: no thinking switch)."""
    import json
    import shutil

    from qwen3_api.model.gguf import prepare

    override = tmp_path / "tok"
    override.mkdir()
    own = prepare(MOE_Q8_0)
    shutil.copy(own / "tokenizer.json", override / "tokenizer.json")
    config = json.loads((own / "tokenizer_config.json").read_text())
    config["chat_template"] = get_variant("2507-instruct").chat_template()
    (override / "tokenizer_config.json").write_text(json.dumps(config))
    with TestClient(serve_app(tmp_path, MOE_Q8_0, "--tokenizer", str(override))) as client:
        [card] = client.get("/v1/models").json()["data"]
        on = chat(client, card["id"])["usage"]["prompt_tokens"]
        off = chat(client, card["id"], chat_template_kwargs={"enable_thinking": False})["usage"]["prompt_tokens"]
        assert on == off  # the file's own (original) template would add the empty thought when off
