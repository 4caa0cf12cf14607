"""The console's session over the real Gateway (SQLite) and a scripted engine: sign-in, cookie, CSRF, roles.

The browser tests (tests/console/) drive the same rules through the pages; these pin each rule at the HTTP level.
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from qwen3_api.api.app import Settings, create_app
from qwen3_api.api.console.sessions import COOKIE, CSRF_HEADER
from qwen3_api.platform.catalog import Catalog
from qwen3_api.platform.db import Database
from qwen3_api.platform.gateway import Gateway
from tests.api.helpers import ADMIN, BASE, MODEL, Console, ScriptedEngine


def test_cookie_is_httponly_strict_and_holds_no_key(console: Console) -> None:
    c = console.client()
    r = c.post("/console/api/session", json={"key": ADMIN})
    assert r.status_code == 201
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie, cookie
    assert ADMIN not in cookie and ADMIN not in r.text
    data = r.json()["data"]
    assert data["role"] == "admin" and len(data["csrf_token"]) >= 40
    assert c.get("/console/api/session").json()["data"]["role"] == "admin"


def test_every_wrong_key_gets_the_same_answer_and_delay(console: Console) -> None:
    revoked = console.new_key()
    console.client().delete("/admin/keys/1", headers={"Authorization": f"Bearer {ADMIN}"})
    expired = console.new_key(expires_at="2099-01-01T00:00:00Z")
    with console.gateway.db.engine.begin() as conn:  # expire it behind the API's back (the API refuses the past)
        conn.exec_driver_sql("UPDATE api_keys SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = 2")
    console.gateway.invalidate()
    answers = []
    for key in ("sk-unknown", revoked, expired, "not-even-a-key", ADMIN + "x"):
        started = time.monotonic()
        r = console.client().post("/console/api/session", json={"key": key})
        answers.append((r.status_code, r.json(), "set-cookie" in r.headers))
        assert time.monotonic() - started >= 0.3
    assert answers == [(401, {"error": {"message": "Invalid key.", "type": "authentication_error",
                                        "param": None, "code": "invalid_api_key"}}, False)] * 5


def test_changes_need_the_csrf_token_and_the_same_origin(console: Console) -> None:
    c, csrf = console.sign_in(ADMIN)
    body = {"name": "via-console"}
    assert c.post("/admin/keys", json=body).json()["error"]["code"] == "csrf_failed"
    assert c.post("/admin/keys", json=body, headers={CSRF_HEADER: "wrong"}).status_code == 403
    evil = {CSRF_HEADER: csrf, "Origin": "https://evil.example"}
    assert c.post("/admin/keys", json=body, headers=evil).status_code == 403
    ok = c.post("/admin/keys", json=body, headers={CSRF_HEADER: csrf, "Origin": BASE})
    assert ok.status_code == 201 and ok.json()["key"].startswith("sk-")
    assert c.get("/admin/keys").status_code == 200  # reads need no token
    # A cross-site sign-in (login CSRF) is refused like a wrong key.
    assert console.client().post("/console/api/session", json={"key": ADMIN},
                                 headers={"Origin": "https://evil.example"}).status_code == 401


def test_sign_out_ends_the_session(console: Console) -> None:
    c, csrf = console.sign_in(ADMIN)
    assert c.delete("/console/api/session").status_code == 403  # sign-out is a change: token needed
    r = c.delete("/console/api/session", headers={CSRF_HEADER: csrf})
    assert r.status_code == 200 and COOKIE in r.headers["set-cookie"]
    stale = console.client()
    stale.cookies.set(COOKIE, c.cookies.get(COOKIE) or "gone")
    assert c.get("/console/api/session").status_code == 401
    assert c.get("/admin/keys").status_code == 401


def test_a_key_session_sees_only_its_key_and_no_admin_route(console: Console) -> None:
    mine, other = console.new_key(credit="5"), console.new_key()
    c, csrf = console.sign_in(mine)
    assert c.get("/console/api/session").json()["data"]["role"] == "key"
    for path in ("/admin/keys", "/admin/usage/daily", "/admin/generations", "/admin/engine"):
        r = c.get(path)
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required", path
    assert c.post("/admin/keys", json={"name": "x"}, headers={CSRF_HEADER: csrf}).status_code == 403
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    assert c.post("/v1/chat/completions", json=chat).status_code == 403  # the playground needs the token too
    mine_answer = c.post("/v1/chat/completions", json=chat, headers={CSRF_HEADER: csrf})
    assert mine_answer.status_code == 200, mine_answer.text
    other_answer = console.client().post("/v1/chat/completions", json=chat,
                                         headers={"Authorization": f"Bearer {other}"})
    assert other_answer.status_code == 200
    rows = c.get("/v1/key/generations").json()
    assert [r["id"] for r in rows["data"]] == [mine_answer.json()["id"]] and rows["total"] == 1
    usage = c.get("/v1/key/usage", params={"days": 7}).json()
    assert len(usage["days"]) == 7 and sum(r["requests"] for r in usage["data"]) == 1
    assert c.get("/v1/key").json()["data"]["limit"] == "5"
    csv = c.get("/v1/key/generations.csv")
    assert csv.status_code == 200 and mine_answer.json()["id"] in csv.text
    assert other_answer.json()["id"] not in csv.text


def test_revoking_a_key_ends_its_sessions(console: Console) -> None:
    key = console.new_key()
    c, _ = console.sign_in(key)
    admin, csrf = console.sign_in(ADMIN)
    key_id = admin.get("/admin/keys").json()["data"][-1]["id"]
    assert admin.delete(f"/admin/keys/{key_id}", headers={CSRF_HEADER: csrf}).status_code == 200
    assert c.get("/v1/key").status_code == 401
    assert c.get("/console/api/session").status_code == 401


def test_admin_playground_requests_are_recorded_under_the_console_admin(console: Console) -> None:
    c, csrf = console.sign_in(ADMIN)
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "stream": True,
            "stream_options": {"include_usage": True}}
    with c.stream("POST", "/v1/chat/completions", json=chat, headers={CSRF_HEADER: csrf}) as r:
        assert r.status_code == 200
        body = r.read().decode()
    assert '"reasoning"' in body and "Hello" in body
    rows = c.get("/admin/generations").json()
    assert rows["total"] == 1 and rows["data"][0]["key_label"] == "console-admin"
    assert rows["data"][0]["streamed"] is True and rows["data"][0]["reasoning_tokens"] > 0
    top = c.get("/admin/usage/keys").json()["data"]
    assert top[0]["key_name"] == "console-admin" and top[0]["requests"] == 1


def test_console_off_means_no_pages_and_no_cookie_auth(tmp_path: Path, qwen3_tokenizer_dir: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'off.db'}")
    db.upgrade()
    app = create_app(ScriptedEngine(lambda *a: [1]), Catalog.load(), Gateway(db, admin_key=ADMIN),
                     Settings(model_path=str(qwen3_tokenizer_dir)))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/console").status_code == 404
        assert c.post("/console/api/session", json={"key": ADMIN}).status_code == 404
        c.cookies.set(COOKIE, "anything")
        assert c.get("/admin/keys").status_code == 401
        assert "/console/api/session" not in c.get("/openapi.json").json()["paths"]
    db.dispose()


def test_serve_has_the_console_on_unless_no_console() -> None:
    import argparse

    from qwen3_api.api.serve import add_serve_args

    parser = add_serve_args(argparse.ArgumentParser())
    assert parser.parse_args([]).console is True
    assert parser.parse_args(["--no-console"]).console is False
