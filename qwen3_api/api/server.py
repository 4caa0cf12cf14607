"""How `serve` runs the app under uvicorn: a drained shutdown and read deadlines for slow clients.

The options are defined in serve.py (`add_serve_args`), which `--help` imports without uvicorn.

- SIGTERM / SIGINT: uvicorn stops accepting connections; the app's ``Drain`` gives the requests in flight
  ``--shutdown-timeout`` seconds, then ends the rest (api/drain.py); uvicorn waits for them to send their last
  event, and the lifespan closes the Gateway (returning credit leases) only after every request settled. The
  process then exits 0. A second SIGINT still forces the exit.
- Slow clients (slowloris): uvicorn has no deadline for reading a request. ``GuardedH11Protocol`` adds two: the
  request head must arrive within ``--request-header-timeout`` of its first byte (or of the connection), the
  body within ``--request-body-timeout`` of the head; otherwise 408 and the connection closes. Heads larger
  than ``--max-header-bytes`` get 431. Idle keep-alive connections close after ``--timeout-keep-alive``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

# After the shutdown deadline, the requests that were ended get this long to send their last event and settle.
END_GRACE_S = 10.0


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with deadlines for reading a request's head and body."""

    header_timeout = 10.0
    body_timeout = 60.0
    max_header_bytes = 32 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._reading: str | None = None  # "head" | "body" while a deadline runs
        self._head_bytes = 0  # bytes of the request head read so far
        self._head_tail = b""  # the last bytes seen, for a "\r\n\r\n" split across reads

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect("head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._expect(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            if self._reading is None:
                self._expect("head")  # the first bytes of the next request on a keep-alive connection
            if self._head_too_big(data):
                self._expect(None)
                self.transport.write(_raw_response(431, "Request Header Fields Too Large",
                                                   f"The request head is larger than {self.max_header_bytes} bytes."))
                self.transport.close()
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._head_bytes, self._head_tail = 0, b""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._expect("body")
        elif state is not h11.IDLE:
            self._expect(None)  # the whole request is in (or the connection is ending)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and self._reading != "head":
            self._expect(None)  # idle now: uvicorn's keep-alive timeout takes over until the next byte

    def _head_too_big(self, data: bytes) -> bool:
        # h11 bounds only a head that is still incomplete; a whole one arriving at once must be counted here.
        window = self._head_tail + data
        end = window.find(b"\r\n\r\n")
        self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._head_tail))
        self._head_tail = window[-3:]
        return self._head_bytes > self.max_header_bytes

    def _expect(self, what: str | None) -> None:
        if what == self._reading:
            return
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._reading = what
        if what is not None:
            delay = self.header_timeout if what == "head" else self.body_timeout
            self._read_timer = self.loop.call_later(delay, self._too_slow)

    def _too_slow(self) -> None:
        what, self._reading, self._read_timer = self._reading, None, None
        if self.transport.is_closing():
            return
        limit = self.header_timeout if what == "head" else self.body_timeout
        cycle = self.cycle if what == "body" else None
        if cycle is None or not cycle.response_started:
            self.transport.write(_raw_response(408, "Request Timeout",
                                               f"The request {what} did not arrive within {limit:g} s."))
        if cycle is not None:
            cycle.disconnected = True  # the app reading the body sees the client gone
            cycle.message_event.set()
        self.transport.close()


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose shutdown first starts the app's drain (api/drain.py) and exits 0 afterwards."""

    def __init__(self, config: uvicorn.Config, drain: Any) -> None:
        super().__init__(config)
        self.drain = drain

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        self.drain.begin()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal after its shutdown, so the process would die of it; a drained shutdown
        # is a clean exit.
        self._captured_signals.clear()


def serve_app(app: Any, args: argparse.Namespace) -> None:
    """Run ``app`` (built by serve.build_app) until SIGTERM / SIGINT, with the options above."""
    protocol = type("Protocol", (GuardedH11Protocol,), {
        "header_timeout": args.request_header_timeout, "body_timeout": args.request_body_timeout,
        "max_header_bytes": args.max_header_bytes})
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                            http=protocol, h11_max_incomplete_event_size=args.max_header_bytes,
                            timeout_keep_alive=args.timeout_keep_alive,
                            timeout_graceful_shutdown=args.shutdown_timeout + END_GRACE_S)
    DrainingServer(config, app.state.api.drain).run()
