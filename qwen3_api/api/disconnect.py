"""A client that leaves stops the work: one ASGI layer for every route, present and future.

Once the app has read the whole request body, nothing else the client sends matters but a disconnect. This layer
then watches the connection, and when the client goes away before the response has ended it cancels the app's
handling of the request. A route needs no code of its own for it: the cancellation reaches whatever it awaits
(the engine stream, a database call), and the cleanup it already has for errors runs (``Generation`` aborts the
engine request, freeing its KV blocks, and settles once as ``cancelled`` with the tokens generated so far).

Streaming responses watch for the disconnect themselves too (``SSEResponse``); whichever notices first wins and
the other finds the work already stopped. Later ``receive`` calls by the app get the disconnect, as from a server.
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class CancelOnDisconnectMiddleware:
    """Cancel a request's handler when its client disconnects before the response is complete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read = anyio.Event()
        gone = anyio.Event()
        finished = False

        async def app_receive() -> Message:
            if not body_read.is_set():
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                elif not message.get("more_body", False):
                    body_read.set()
                return message
            await gone.wait()  # only the watcher reads the connection from here on
            return {"type": "http.disconnect"}

        async def app_send(message: Message) -> None:
            nonlocal finished
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                await body_read.wait()
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()
                if not finished:
                    tg.cancel_scope.cancel()  # nobody will read the answer: stop computing it

            tg.start_soon(watch)
            try:
                await self.app(scope, app_receive, app_send)
            finally:
                tg.cancel_scope.cancel()  # the response is done (or abandoned): stop watching
