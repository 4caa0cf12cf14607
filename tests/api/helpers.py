"""Helpers for the API tests: an engine that plays scripted token ids, a gateway that records its calls, the app
around them over TestClient (``Harness``), the console's app (``Console``), and the checks several test modules share.

The scripted engine has the AsyncLLMEngine surface (generate / abort / stats / max_model_len) so the HTTP
layer's parsing, framing and bookkeeping can be checked against exact, known outputs; the real engine with
random weights is exercised by tests/e2e. The fixtures that build these are in conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from jsonschema import Draft202012Validator

from qwen3_api.chat.tokens import ChatTokenizer
from qwen3_api.engine.exceptions import PromptTooLongError
from qwen3_api.engine.outputs import CompletionOutput, EngineStats, RequestOutput
from qwen3_api.engine.sampling_params import SamplingParams
from qwen3_api.errors import APIError
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.meter import Meter
from qwen3_api.platform.pricing import Usage
from qwen3_api.platform.principal import Principal, bearer_token
from qwen3_api.platform.response_store import ResponseStore
from qwen3_api.platform.tables import metadata

SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "reference" / "openai-chat-schema.json"
MODEL = "qwen/qwen3-30b-a3b"
ANYONE = Principal(key_hash="anyone", key_id=None, name="anyone", label="sk-…test")
OTHER = Principal(key_hash="other", key_id=None, name="other", label="sk-…othr")


def _scratch_store() -> ResponseStore:
    db = Database(f"sqlite:///{tempfile.mkdtemp(prefix='qwen3-api-test-')}/store.db")
    metadata.create_all(db.engine)
    return ResponseStore(db)

Script = Callable[[list[int], SamplingParams, int], list[int]]


@dataclass
class _ModelConfig:
    vocab_size: int = 151936


class ScriptedEngine:
    """Emits ``script(prompt_ids, params, choice_index)`` one token per step (``step_s`` apart).

    Respects ``max_tokens`` ("length"); a script that runs out ends with "stop". ``fail_after`` raises
    mid-stream; ``first_token_delay_s`` imitates a long prefill.
    """

    def __init__(self, script: Script, *, max_model_len: int = 4096, step_s: float = 0.0,
                 first_token_delay_s: float = 0.0) -> None:
        self.script = script
        self.max_model_len = max_model_len
        self.model_config = _ModelConfig()
        self.step_s = step_s
        self.first_token_delay_s = first_token_delay_s
        self.fail_after: int | None = None
        self.active: set[str] = set()
        self.aborted: list[str] = []
        self.requests: list[tuple[list[int], SamplingParams, str]] = []
        self.shutdown_called = False

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str
                       ) -> AsyncIterator[RequestOutput]:
        if len(prompt_ids) >= self.max_model_len:
            raise PromptTooLongError(len(prompt_ids), self.max_model_len, "the model's context")
        self.requests.append((list(prompt_ids), params, request_id))
        self.active.add(request_id)
        finished = False
        try:
            plans = [self.script(prompt_ids, params, i) for i in range(params.n)]
            limit = params.max_tokens or 10**9
            done = [False] * params.n
            step = 0
            if self.first_token_delay_s:
                await asyncio.sleep(self.first_token_delay_s)
            while not all(done):
                if self.fail_after is not None and step >= self.fail_after:
                    raise RuntimeError("scripted engine failure")
                outs = []
                for i, plan in enumerate(plans):
                    if done[i]:
                        continue
                    tid = plan[step]
                    reason = None
                    if step + 1 >= limit:
                        reason = "length"
                    elif step + 1 >= len(plan):
                        reason = "stop"
                    done[i] = reason is not None
                    lp = None
                    if params.logprobs is not None:
                        lp = [{tid: -0.25, **{(tid + k) % 1000 + 10: -1.0 - k for k in range(1, params.logprobs + 1)}}]
                    outs.append(CompletionOutput(index=i, token_ids=[tid], logprobs=lp, finish_reason=reason,
                                                 num_tokens=step + 1))
                step += 1
                finished = all(done)
                yield RequestOutput(request_id, list(prompt_ids), 0, outs, finished=finished)
                await asyncio.sleep(self.step_s)
        finally:
            # As the real engine: an iterator closed before the end aborts its request.
            if not finished and request_id not in self.aborted:
                self.aborted.append(request_id)
            self.active.discard(request_id)

    async def abort(self, request_id: str) -> None:
        if request_id in self.active and request_id not in self.aborted:
            self.aborted.append(request_id)
        self.active.discard(request_id)

    def stats(self) -> EngineStats:
        return EngineStats(running=len(self.active), waiting=0, kv_usage=0.1 * len(self.active),
                           prefix_cache_hit_rate=0.0, num_blocks=64, block_size=16, num_preemptions=0)

    @property
    def is_running(self) -> bool:
        return not self.shutdown_called

    async def shutdown(self) -> None:
        self.shutdown_called = True


@dataclass
class RecordingGateway:
    """Authenticates everyone, records admit/settle, and can be told to refuse admission."""

    refuse: APIError | None = None
    admitted: list[dict[str, Any]] = field(default_factory=list)
    settled: list[dict[str, Any]] = field(default_factory=list)

    closed: bool = False
    # Stored Responses: the real store over a throw-away SQLite file (the store's key scoping is under test).
    responses: ResponseStore = field(default_factory=lambda: _scratch_store())

    async def authenticate(self, authorization: str | None) -> Principal:
        # "Bearer other" is a second key, to show that one key never sees another's stored responses.
        return OTHER if bearer_token(authorization) == "other" else ANYONE

    async def close(self) -> None:
        self.closed = True

    def meter(self, principal: Principal, entry: Any, *, prompt_tokens: int, max_tokens: int, generation_id: str,
              streamed: bool, endpoint: str | None = None) -> Meter:
        """The real Meter over this recording admit / settle."""
        return Meter(self, principal, entry, prompt_tokens=prompt_tokens,
                     max_tokens=max_tokens, generation_id=generation_id, streamed=streamed, endpoint=endpoint)

    def authorize_model(self, principal: Any, model_id: str) -> None:
        return None

    async def admit(self, principal: Any, entry: Any, *, prompt_tokens: int, max_tokens: int,
                    generation_id: str) -> dict[str, Any]:
        if self.refuse is not None:
            raise self.refuse
        adm = {"entry": entry, "prompt_tokens": prompt_tokens, "max_tokens": max_tokens,
               "generation_id": generation_id, "headers": {"X-RateLimit-Limit": "100"}}
        self.admitted.append(adm)
        return _Admission(adm)

    async def settle(self, admission: Any, usage: Usage, *, status: str, streamed: bool, ttft_s: float | None,
                     duration_s: float, endpoint: str | None = None) -> Decimal:
        self.settled.append({"generation_id": admission.data["generation_id"], "usage": usage, "status": status,
                             "streamed": streamed, "ttft_s": ttft_s, "endpoint": endpoint})
        entry = admission.data["entry"]
        return entry.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)


@dataclass
class _Admission:
    data: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return self.data["headers"]


# The app over TestClient (the make_harness fixture builds one).


class Harness:
    """One app: its client, engine and gateway."""

    def __init__(self, client: TestClient, engine: ScriptedEngine, gateway: RecordingGateway) -> None:
        self.client = client
        self.engine = engine
        self.gateway = gateway

    def chat(self, **body: Any) -> Any:
        body.setdefault("model", MODEL)
        body.setdefault("messages", [{"role": "user", "content": "hi"}])
        return self.client.post("/v1/chat/completions", json=body)

    def chat_stream(self, **body: Any) -> list[Any]:
        """The stream's events: dicts for JSON events, the string "[DONE]", ":" for comments."""
        body.setdefault("model", MODEL)
        body.setdefault("messages", [{"role": "user", "content": "hi"}])
        body["stream"] = True
        with self.client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            raw = r.read().decode()
        return parse_sse(raw)


def parse_sse(raw: str) -> list[Any]:
    """Split an SSE body into events, checking the framing (every event ends with a blank line)."""
    assert raw.endswith("\n\n"), raw[-50:]
    events: list[Any] = []
    for block in raw.split("\n\n")[:-1]:
        if block.startswith(":"):
            events.append(":")
            continue
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def text_script(tok: ChatTokenizer, text: str) -> Script:
    """A script that answers ``text`` (special-token text becomes special tokens) for every choice."""
    ids = tok.encode(text)

    def script(prompt_ids: list[int], params: Any, index: int) -> list[int]:
        return ids

    return script


# The console's app as `serve` builds it with the console on: the real Gateway over SQLite (the console fixture).

ADMIN = "admin-key-for-console-tests"
BASE = "http://testserver"


class Console:
    def __init__(self, app: Any, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    def client(self) -> TestClient:
        return TestClient(self.app, base_url=BASE, raise_server_exceptions=False)

    def new_key(self, **body: Any) -> str:
        r = self.client().post("/admin/keys", json={"name": f"k{time.monotonic_ns()}", **body},
                               headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 201, r.text
        return r.json()["key"]

    def sign_in(self, key: str) -> tuple[TestClient, str]:
        c = self.client()
        r = c.post("/console/api/session", json={"key": key})
        assert r.status_code == 201, r.text
        return c, r.json()["data"]["csrf_token"]


# Chat completions: the tools, and a stream's deltas concatenated per choice.

CHAT_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
              {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]


def collect_deltas(events: list[Any]) -> dict[int, dict[str, Any]]:
    """Concatenate the stream's deltas per choice."""
    out: dict[int, dict[str, Any]] = {}
    for ev in events:
        if not isinstance(ev, dict):
            continue
        for c in ev["choices"]:
            acc = out.setdefault(c["index"], {"content": "", "reasoning": "", "reasoning_content": "",
                                               "tool_calls": {}, "finish_reason": None, "logprobs": [],
                                               "roles": 0})
            d = c["delta"]
            acc["roles"] += d.get("role") == "assistant"
            for k in ("content", "reasoning", "reasoning_content"):
                acc[k] += d.get(k) or ""
            for tc in d.get("tool_calls") or []:
                slot = acc["tool_calls"].setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
                if "id" in tc:
                    assert slot["id"] is None, "a call's id is sent once"
                    slot["id"] = tc["id"]
                fn = tc.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
            if c.get("logprobs"):
                acc["logprobs"] += c["logprobs"]["content"]
            if c.get("finish_reason"):
                acc["finish_reason"] = c["finish_reason"]
                acc["native"] = c.get("native_finish_reason")
    return out


async def call_and_leave(app: Any, body: dict[str, Any], leave_after_s: float, path: str = "/v1/chat/completions",
                         engine: ScriptedEngine | None = None) -> list[dict[str, Any]]:
    """Drive the ASGI app like a server whose client disconnects ``leave_after_s`` after sending (after the
    engine got the request, when ``engine`` is given: the first request of a process loads the tokenizer)."""
    raw = json.dumps(body).encode()
    sent: list[dict[str, Any]] = []
    state = {"body_sent": False}

    async def receive() -> dict[str, Any]:
        if not state["body_sent"]:
            state["body_sent"] = True
            return {"type": "http.request", "body": raw, "more_body": False}
        while engine is not None and not engine.requests:
            await asyncio.sleep(0.01)
        await asyncio.sleep(leave_after_s)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json"),
                                                              (b"content-length", str(len(raw)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}
    await asyncio.wait_for(app(scope, receive, send), timeout=20)
    return sent


# OpenAI's Responses schema (tests/reference/openai-responses-schema.json).

_DEFS = json.loads((Path(__file__).parents[1] / "reference" / "openai-responses-schema.json").read_text())["$defs"]
# The stream event union's members by their type, so a bad event is reported against its own schema (the
# union's error only says "not valid under any of the given schemas").
RESPONSE_EVENTS = {_DEFS[m["$ref"].rsplit("/", 1)[-1]]["properties"]["type"]["enum"][0]: m["$ref"].rsplit("/", 1)[-1]
                   for m in _DEFS["ResponseStreamEvent"]["anyOf"]}


def validate_responses(name: str, obj: Any) -> None:
    """``obj`` against OpenAI's schema ``name`` (tests/reference/openai-responses-schema.json); a stream event
    against its member of ResponseStreamEvent and then the union itself."""
    names = [RESPONSE_EVENTS[obj["type"]], name] if name == "ResponseStreamEvent" else [name]
    for schema in names:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in Draft202012Validator({"$ref": f"#/$defs/{schema}", "$defs": _DEFS}).iter_errors(obj)]
        assert not errors, (schema, errors[:5])


# The schema fuzzers' Hypothesis settings (test_fuzz_schemas.py, test_fuzz_dialects.py).

FUZZ_EXAMPLES = int(os.environ.get("QWEN3_FUZZ_EXAMPLES", "0")) or None
FUZZ = settings(deadline=None, database=None, derandomize=not os.environ.get("QWEN3_FUZZ_RANDOM"),
                phases=[Phase.generate], suppress_health_check=list(HealthCheck))
