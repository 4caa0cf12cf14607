"""Helpers for the end-to-end tests: `qwen3-api serve` as a child process (``start_server`` / ``stop_server``, also
used by tests/console and tests/platform), the keyed server of the dialect modules, and the shared checks (random
weights: structure, never words). The session's --no-auth server is the ``server`` fixture in conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from qwen3_api.demo.tiny import make_tiny_model

MODEL = "qwen/qwen3-30b-a3b"
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}
TAGS = ("<think>", "</think>", "<tool_call>", "</tool_call>")
_SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "reference" / "openai-chat-schema.json"
_DEFS = json.loads(_SCHEMA.read_text())["$defs"]
NATIVE_CONTEXT = 2048
SERVED_CONTEXT = 4096  # above native: the server must turn YaRN on and report 4096


# `qwen3-api serve` as a child process.
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], log_path: Path, env: dict[str, str] | None = None, *, timeout_s: float = 120,
                 wait: bool = True) -> tuple[subprocess.Popen[bytes], str]:
    """``qwen3-api serve ARGS`` on a free loopback port, as a child in its own session (a signal to its group
    reaches only it), stdout and stderr into ``log_path``; ``env`` is its environment (default: this one), always
    with PYTHONUNBUFFERED=1. Waits until /health answers 200 (``wait_healthy``) unless ``wait`` is False; a server
    that does not get there is stopped. Returns the process and its base URL, http://127.0.0.1:PORT."""
    port = free_port()
    cmd = [sys.executable, "-m", "qwen3_api.cli", "serve", *args, "--port", str(port)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"})
    base_url = f"http://127.0.0.1:{port}"
    if wait:
        try:
            wait_healthy(proc, base_url, log_path, timeout_s)
        except BaseException:
            stop_server(proc, signal.SIGKILL)
            raise
    return proc, base_url


def wait_healthy(proc: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout_s: float = 120
                 ) -> httpx.Response:
    """Poll /health until it answers 200 (that response); raise, with the server's log, if the process exits or
    ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            health = httpx.get(base_url + "/health", timeout=1)
            if health.status_code == 200:
                return health
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not healthy after {timeout_s:g} s:\n{log_path.read_text()}")
        time.sleep(0.3)


def stop_server(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout_s: float = 20) -> int:
    """Send ``sig`` (SIGINT: a clean shutdown) to the server's process group if it still runs, wait ``timeout_s``,
    then SIGKILL. Its exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


@dataclass
class Server:
    """The session's --no-auth server (the ``server`` fixture)."""

    base_url: str  # http://127.0.0.1:PORT
    log_path: Path
    model_dir: Path

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# A real server with keys (not the session's --no-auth one), for the dialect modules: one process per module.
# Keys come from the admin API: ``rich`` (credit enough), ``broke`` (credit 0: every request is a 402) and ``slow``
# (one request a minute: the second is a 429). ``ledger(key, id)`` reads a generation's ledger row as its key.

ADMIN_KEY = "admin-e2e-dialects"


@dataclass
class KeyedServer:
    base_url: str
    model_dir: Path
    log_path: Path
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def ledger(self, key: str, generation_id: str) -> dict[str, Any]:
        r = httpx.get(self.v1 + "/generation", params={"id": generation_id}, timeout=30,
                      headers={"Authorization": f"Bearer {self.keys[key]}"})
        assert r.status_code == 200, r.text
        return r.json()["data"]

    def think_bias(self) -> dict[str, float]:
        """Random weights rarely open a thought: a logit bias on ``<think>`` makes it certain (the chat layer
        lets the thought open once, and a thinking budget closes it)."""
        from tokenizers import Tokenizer

        tid = Tokenizer.from_file(str(self.model_dir / "tokenizer.json")).token_to_id("<think>")
        return {str(tid): 100.0}


@contextmanager
def keyed_server(root: Path, tokenizer_dir: Path) -> Iterator[KeyedServer]:
    model_dir = make_tiny_model(root / "model", tokenizer_dir=tokenizer_dir, max_position_embeddings=2048, seed=1)
    log_path = root / "server.log"
    proc, base_url = start_server(["--model", str(model_dir), "--database-url", f"sqlite:///{root / 'ledger.db'}",
                                   "--kv-cache-memory", "0.01", "--max-model-len", "2048", "--keepalive-s", "1"],
                                  log_path, env={**os.environ, "QWEN3_API_ADMIN_KEY": ADMIN_KEY})
    server = KeyedServer(base_url, model_dir, log_path)
    try:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        for name, limits in (("rich", {"credit": "100"}), ("broke", {"credit": "0"}), ("slow", {"rpm": 1})):
            r = httpx.post(server.base_url + "/admin/keys", headers=admin, json={"name": name, **limits}, timeout=30)
            assert r.status_code == 201, r.text
            server.keys[name] = r.json()["key"]
        yield server
    finally:
        stop_server(proc)


# Checks.
def validate(name: str, obj: Any) -> None:
    """Assert ``obj`` matches OpenAI's schema ``name``."""
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": _DEFS}).iter_errors(obj)]
    assert not errors, errors


def no_tags(*texts: str | None) -> None:
    for t in texts:
        for tag in TAGS:
            assert tag not in (t or ""), (tag, t)


def collect_stream(chunks: Any) -> dict[str, Any]:
    """Concatenate an SDK stream's deltas (choice 0 unless n > 1), keep the usage chunk."""
    out: dict[int, dict[str, Any]] = {}
    usage = None
    last_was_usage = False
    for ch in chunks:
        # exclude_unset: exactly the fields the server sent (the SDK fills the rest with None).
        validate("CreateChatCompletionStreamResponse", ch.model_dump(exclude_unset=True))
        if ch.usage is not None:
            usage = ch.usage
            assert ch.choices == []
            last_was_usage = True
            continue
        last_was_usage = False
        for c in ch.choices:
            acc = out.setdefault(c.index, {"content": "", "reasoning": "", "tool_calls": {}, "finish": None,
                                           "logprobs": [], "native": None})
            d = c.delta
            acc["content"] += d.content or ""
            extra = d.model_extra or {}
            acc["reasoning"] += extra.get("reasoning") or ""
            assert (extra.get("reasoning") or "") == (extra.get("reasoning_content") or "")
            for tc in d.tool_calls or []:
                slot = acc["tool_calls"].setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function is not None:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
            if c.logprobs is not None and c.logprobs.content:
                acc["logprobs"] += c.logprobs.content
            if c.finish_reason is not None:
                acc["finish"] = c.finish_reason
                acc["native"] = (c.model_extra or {}).get("native_finish_reason")
    return {"choices": out, "usage": usage, "usage_last": last_was_usage}


def think_bias(server: Any) -> dict[str, float]:
    """A logit bias that makes ``<think>`` certain: random weights rarely open a thought by themselves."""
    from tokenizers import Tokenizer

    tid = Tokenizer.from_file(str(server.model_dir / "tokenizer.json")).token_to_id("<think>")
    return {str(tid): 100.0}
