"""The project's shared exception types: OpenAI-shaped API errors, and start-up errors the CLI prints as one line."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error the client sees as ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 for a bad request parameter."""
    return APIError(400, message, "invalid_request_error", param=param, code=code)


class StartupError(Exception):
    """A setup problem the operator must fix (a database or Redis URL, a port, a path), found before serving.

    ``qwen3-api`` prints it as one ``qwen3-api: error: ...`` line and exits non-zero, without a traceback.
    """
