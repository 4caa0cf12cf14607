"""A 500 leaves the keep-alive connection usable: a pooled client's next request goes out on it and succeeds.

Starlette re-raises after sending the 500 and uvicorn then closes the socket without ``Connection: close``;
the client has pooled the connection and loses its next request. Only a real server shows it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import Request
from fastapi.responses import StreamingResponse

from qwen3_api.api.app import Settings, create_app
from qwen3_api.platform.catalog import Catalog
from tests.api.helpers import RecordingGateway, ScriptedEngine


@pytest.fixture
def server(qwen3_tokenizer_dir: Path) -> Iterator[tuple[str, list[int]]]:
    """The real app plus test-only routes on uvicorn in a thread; yields its URL and the ports that hit /boom."""
    app = create_app(ScriptedEngine(lambda *a: [1]), Catalog.load(), RecordingGateway(),
                     Settings(model_path=str(qwen3_tokenizer_dir)))
    ports: list[int] = []

    @app.post("/boom")
    async def boom(request: Request) -> None:
        assert request.client is not None
        ports.append(request.client.port)
        raise RuntimeError("a bug")

    @app.get("/port")
    async def port(request: Request) -> dict[str, int]:
        assert request.client is not None
        return {"port": request.client.port}

    @app.get("/half-stream")
    async def half_stream() -> StreamingResponse:
        async def body() -> Any:
            yield b"partial"
            raise RuntimeError("a bug mid-stream")
        return StreamingResponse(body())

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "test server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", ports
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_connection_survives_a_500(server: tuple[str, list[int]]) -> None:
    url, ports = server
    with httpx.Client(base_url=url, limits=httpx.Limits(max_connections=1)) as client:
        for _ in range(3):
            r = client.post("/boom", json={})
            assert r.status_code == 500
            err = r.json()["error"]
            assert err["type"] == "server_error" and err["code"] == "internal_error" and "a bug" not in err["message"]
            # Either the connection stays open, or the server says it will not (never a silent close).
            if r.headers.get("connection", "").lower() == "close":
                continue
            time.sleep(0.05)  # let a close, if any, reach the client before it reuses the connection
            again = client.get("/port")
            assert again.status_code == 200
            assert again.json()["port"] == ports[-1]  # the same connection carried both


def test_a_stream_cut_by_an_error_still_closes_and_the_next_request_works(server: tuple[str, list[int]]) -> None:
    url, _ = server
    with httpx.Client(base_url=url) as client:
        with pytest.raises(httpx.HTTPError):
            client.get("/half-stream").read()  # a truncated body: closing is the only honest end
        assert client.get("/port").status_code == 200
