"""Browser tests of the console: the real `qwen3-api serve` on a tiny checkpoint, driven by Debian's Chromium
through Playwright (its own browser downloads are not used: ``executable_path``).

Without Chromium or Playwright these tests skip on a developer's machine and fail in CI (CI=true), where
.ci/run installs Chromium.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qwen3_api.demo.tiny import make_tiny_model
from tests.console.helpers import ADMIN_KEY, DESKTOP, ConsoleServer, chromium_path, missing
from tests.e2e.helpers import start_server, stop_server


@pytest.fixture(scope="session")
def console_server(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> Iterator[ConsoleServer]:
    root = tmp_path_factory.mktemp("console")
    # Thinking-2507 always thinks: with a thinking budget the answer is reasoning, then the closing, then content
    # (random weights would rarely open a thought by themselves).
    model_dir = make_tiny_model(root / "model", tokenizer_dir=qwen3_tokenizer_dir, variant="2507-thinking",
                                max_position_embeddings=2048, seed=3)
    log_path = root / "server.log"
    proc, base = start_server(["--model", str(model_dir), "--database-url", f"sqlite:///{root / 'ledger.db'}",
                               "--kv-cache-memory", "0.01", "--max-model-len", "1024"],
                              log_path, env={**os.environ, "QWEN3_API_ADMIN_KEY": ADMIN_KEY})
    try:
        yield ConsoleServer(base, log_path)
    finally:
        stop_server(proc)
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
        missing("playwright not installed (pip install -e '.[test]')")
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
