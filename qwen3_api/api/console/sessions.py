"""Console sessions: an HttpOnly, SameSite=Strict cookie holds a random session id; the server holds the rest.

A session never holds the key it was opened with: an admin session holds its role, a key session the key's
SHA-256 (which the ledger and the key table already hold), and every request re-checks that key, so a key revoked
or expired ends its sessions at once. Every change (any method but GET / HEAD / OPTIONS) made with the cookie must
carry the session's CSRF token in ``X-CSRF-Token`` and, when the browser sends one, a same-host ``Origin``.

Sessions live in this process's memory: they end with a restart, and several replicas behind one address need
sticky sessions (or the admin key as a bearer token, which every /admin route takes as before).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from starlette.requests import Request

from qwen3_api.errors import APIError
from qwen3_api.platform.gateway import Gateway
from qwen3_api.platform.principal import Principal

COOKIE = "qwen3_api_console"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Role = Literal["admin", "key"]
# What the ledger records for the admin's own playground requests: no stored key, so no limits, and a hash
# that no real key can have (real ones are 64 hex digits).
ADMIN_PRINCIPAL = Principal(key_hash="console-admin", key_id=None, name="admin (console)", label="admin")


@dataclass(slots=True)
class Session:
    role: Role
    key_hash: str | None  # the key's SHA-256 for a key session
    csrf: str
    created: float
    seen: float


class SessionStore:
    """Sessions by the SHA-256 of their id (the id itself is only ever in the browser's cookie)."""

    def __init__(self, *, ttl_s: float = 12 * 3600, idle_s: float = 2 * 3600, max_sessions: int = 10_000,
                 fail_delay_s: float = 0.75, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        # Every refused sign-in is answered this long after it arrived, whatever the reason.
        self.fail_delay_s = fail_delay_s
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    @staticmethod
    def _digest(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def create(self, role: Role, key_hash: str | None) -> tuple[str, Session]:
        now = self.clock()
        session_id = secrets.token_urlsafe(32)
        session = Session(role=role, key_hash=key_hash, csrf=secrets.token_urlsafe(32), created=now, seen=now)
        self._sessions[self._digest(session_id)] = session
        while len(self._sessions) > self.max_sessions:  # the least recently used goes first
            self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 128:
            return None
        digest = self._digest(session_id)
        session = self._sessions.get(digest)
        if session is None:
            return None
        now = self.clock()
        if now - session.created > self.ttl_s or now - session.seen > self.idle_s:
            del self._sessions[digest]
            return None
        session.seen = now
        self._sessions.move_to_end(digest)
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(self._digest(session_id), None)

    def end_key(self, key_hash: str) -> None:
        """End every session of one key (it was revoked or expired)."""
        for digest in [d for d, s in self._sessions.items() if s.key_hash == key_hash]:
            del self._sessions[digest]

    def __len__(self) -> int:
        return len(self._sessions)


def store_of(request: Request) -> SessionStore | None:
    """The app's session store; None when the console is off (then a cookie means nothing)."""
    return getattr(request.app.state, "console_sessions", None)


def current_session(request: Request) -> Session | None:
    """The live session named by the request's cookie, if any."""
    store = store_of(request)
    return None if store is None else store.get(request.cookies.get(COOKIE))


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another host (no ``Origin``: not a browser's POST)."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host", "")


def check_csrf(request: Request, session: Session) -> None:
    """403 for a cookie-authenticated change without the session's CSRF token or from another origin."""
    if request.method in SAFE_METHODS:
        return
    token = request.headers.get(CSRF_HEADER)
    if not same_origin(request) or token is None or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise APIError(403, f"Missing or wrong {CSRF_HEADER} header for this console session.",
                       "permission_error", code="csrf_failed")


async def session_principal(request: Request, gateway: Gateway) -> Principal | None:
    """Who a console session acts as on /v1/* (the playground, the key's own pages); None without a session.

    A key session is its key, checked again now (401 and the key's sessions end when it was revoked or has
    expired); an admin session is :data:`ADMIN_PRINCIPAL`.
    """
    session = current_session(request)
    if session is None:
        return None
    check_csrf(request, session)
    if session.role == "admin" or session.key_hash is None:
        return ADMIN_PRINCIPAL
    try:
        return await gateway.authenticate_hash(session.key_hash)
    except APIError as exc:
        store = store_of(request)
        if exc.status == 401 and store is not None:
            store.end_key(session.key_hash)
        raise


def require_admin_session(request: Request, session: Session) -> None:
    """A cookie-authenticated /admin request: the admin's session, with its CSRF token for a change; else 403."""
    check_csrf(request, session)
    if session.role != "admin":
        raise APIError(403, "This console session is signed in with an API key: the admin API needs the admin key.",
                       "permission_error", code="admin_required")
