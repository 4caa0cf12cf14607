"""Browser tests of the console: the real `qwen3-api serve` on a tiny checkpoint, driven by Debian's Chromium
through Playwright (its own browser downloads are not used: ``executable_path``).

Without Chromium or Playwright these tests skip on a developer's machine and fail in CI (CI=true), where
.ci/run installs Chromium.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import _free_port

ADMIN_KEY = "console-e2e-admin-key-0123456789"
MODEL = "qwen/qwen3-30b-a3b"
DESKTOP = {"width": 1280, "height": 800}


def _make_tiny_model() -> Any:
    # The tiny checkpoint maker may move from model/ to demo/: use whichever this checkout has.
    try:
        from qwen3_api.demo.tiny import make_tiny_model
    except ImportError:
        from qwen3_api.demo.tiny import make_tiny_model
    return make_tiny_model


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(what: str) -> None:
    if in_ci():
        pytest.fail(f"{what}: CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(what)


def chromium_path() -> str:
    path = os.environ.get("QWEN3_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        _missing("Chromium not installed (apt-get install -y chromium)")
    return str(path)


@dataclass
class ConsoleServer:
    base: str
    log_path: Path

    @property
    def console(self) -> str:
        return self.base + "/console/"

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.base + path, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                             timeout=30, **kw)

    def new_key(self, name: str, **fields: Any) -> str:
        r = self.admin("POST", "/admin/keys", json={"name": name, **fields})
        assert r.status_code == 201, r.text
        return r.json()["key"]

    def chat(self, key: str, **body: Any) -> dict[str, Any]:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, **body}
        r = httpx.post(self.base + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                       timeout=60)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="session")
def console_server(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> Iterator[ConsoleServer]:
    root = tmp_path_factory.mktemp("console")
    # Thinking-2507 always thinks: with a thinking budget the answer is reasoning, then the closing, then content
    # (random weights would rarely open a thought by themselves).
    model_dir = _make_tiny_model()(root / "model", tokenizer_dir=qwen3_tokenizer_dir, variant="2507-thinking",
                                   max_position_embeddings=2048, seed=3)
    port = _free_port()
    log_path = root / "server.log"
    cmd = [sys.executable, "-m", "qwen3_api.cli", "serve", "--model", str(model_dir), "--port", str(port),
           "--database-url", f"sqlite:///{root / 'ledger.db'}", "--kv-cache-memory", "0.01",
           "--max-model-len", "1024"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "QWEN3_API_ADMIN_KEY": ADMIN_KEY}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy after 120 s:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield ConsoleServer(base, log_path)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert ADMIN_KEY not in text  # the admin key never reaches the log


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: Playwright's sync API keeps an event loop running in the main thread while it
    # is open, and every later test that calls asyncio.run() would fail.
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True)
        yield b
        b.close()


@pytest.fixture
def context(browser: Any, console_server: ConsoleServer) -> Iterator[Any]:
    ctx = browser.new_context(viewport=DESKTOP, base_url=console_server.base)
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()


def sign_in(page: Any, server: ConsoleServer, key: str) -> None:
    page.goto(server.console)
    page.get_by_label("Key", exact=True).fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()
