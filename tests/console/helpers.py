"""Helpers for the console's browser tests: the server's handle (``ConsoleServer``), Chromium's path, signing in.

Without Chromium or Playwright these tests skip on a developer's machine and fail in CI (CI=true), where
.ci/run installs Chromium. The fixtures (the server, the browser, a page) are in conftest.py.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ADMIN_KEY = "console-e2e-admin-key-0123456789"
MODEL = "qwen/qwen3-30b-a3b"
DESKTOP = {"width": 1280, "height": 800}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    if in_ci():
        pytest.fail(f"{what}: CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(what)


def chromium_path() -> str:
    path = os.environ.get("QWEN3_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        missing("Chromium not installed (apt-get install -y chromium)")
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


def sign_in(page: Any, server: ConsoleServer, key: str) -> None:
    page.goto(server.console)
    page.get_by_label("Key", exact=True).fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()
