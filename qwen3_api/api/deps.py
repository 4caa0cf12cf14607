"""FastAPI dependencies, as ``Annotated`` aliases routes declare by type: the app state, its parts, the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from qwen3_api.api import access_log
from qwen3_api.api.console.sessions import current_session, require_admin_session, session_principal
from qwen3_api.api.serving_chat import ChatCompletionService
from qwen3_api.api.serving_completion import CompletionService
from qwen3_api.api.serving_messages import MessagesService
from qwen3_api.api.serving_responses import ResponsesService
from qwen3_api.api.serving_tokenize import TokenizeService
from qwen3_api.api.state import AppState, get_state
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.principal import Principal

StateDep = Annotated[AppState, Depends(get_state)]


def get_gateway(state: StateDep) -> Gateway:
    """The app's Gateway (keys, limits, credits, ledger)."""
    return state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def authenticate(request: Request, gateway: GatewayDep) -> Principal:
    """The caller's Principal from ``Authorization: Bearer ...`` (the Gateway raises the 401), or, without that
    header, from a console session's cookie (console/sessions.py: CSRF-checked for changes)."""
    authorization = request.headers.get("authorization")
    principal = None if authorization is not None else await session_principal(request, gateway)
    if principal is None:
        principal = await gateway.authenticate(authorization)
    access_log.note(key=principal.label)
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]


async def authenticate_anthropic(request: Request, gateway: GatewayDep) -> Principal:
    """The caller of the Messages routes: Anthropic clients send the key as ``x-api-key``; ``Authorization:
    Bearer`` works too (LiteLLM and others forward it so)."""
    key = request.headers.get("x-api-key")
    principal = await gateway.authenticate(f"Bearer {key}" if key else request.headers.get("authorization"))
    access_log.note(key=principal.label)
    return principal


AnthropicPrincipalDep = Annotated[Principal, Depends(authenticate_anthropic)]


def require_admin(request: Request, gateway: GatewayDep,
                  authorization: Annotated[str | None, Header()] = None) -> None:
    """The admin key ($QWEN3_API_ADMIN_KEY) or 401 / 403; without the header, an admin console session (a key's
    session gets 403)."""
    session = current_session(request) if authorization is None else None
    if session is not None:
        require_admin_session(request, session)
        return
    gateway.check_admin(authorization)


def get_chat_service(request: Request) -> ChatCompletionService:
    """The app's chat completion service (one per app, built by create_app)."""
    return request.app.state.chat_service


def get_completion_service(request: Request) -> CompletionService:
    """The app's legacy completion service."""
    return request.app.state.completion_service


def get_responses_service(request: Request) -> ResponsesService:
    """The app's Responses API service."""
    return request.app.state.responses_service


def get_messages_service(request: Request) -> MessagesService:
    """The app's Anthropic Messages API service."""
    return request.app.state.messages_service


def get_tokenize_service(request: Request) -> TokenizeService:
    """The app's tokenizer endpoints."""
    return request.app.state.tokenize_service


ChatServiceDep = Annotated[ChatCompletionService, Depends(get_chat_service)]
CompletionServiceDep = Annotated[CompletionService, Depends(get_completion_service)]
ResponsesServiceDep = Annotated[ResponsesService, Depends(get_responses_service)]
MessagesServiceDep = Annotated[MessagesService, Depends(get_messages_service)]
TokenizeServiceDep = Annotated[TokenizeService, Depends(get_tokenize_service)]
