"""The console's single-page app: the built files under static/ (committed; `console/` holds their source).

``/console/assets/*`` are content-hashed, so cached for good; every other ``/console/...`` path is the app's
index.html (its router draws the page), except ``/console/api/*``, the JSON side. Strict security headers: the
page loads nothing but its own files and talks only to this origin.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

from qwen3_api.errors import APIError

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "X-Frame-Options": "DENY"}
NOT_BUILT = ("<!doctype html><title>qwen3-api console</title><p>The console's files are missing from this "
             "install: run <code>npm ci &amp;&amp; npm run build</code> in <code>console/</code>.</p>")


def _not_found(path: str) -> APIError:
    return APIError(404, f"No console file '{path}'.", "not_found_error", code="not_found")


def spa_router(static: Path = STATIC) -> APIRouter:
    """Routes over the files as they are now (read once: the set of files never changes while serving)."""
    router = APIRouter(include_in_schema=False)
    index_file = static / "index.html"
    index = index_file.read_text() if index_file.is_file() else None
    if index is None:
        log.warning("console assets not found in %s: /console answers with build instructions", static)
    files = {p.relative_to(static).as_posix(): p for p in static.rglob("*")
             if p.is_file() and p != index_file and not p.name.startswith(".")}

    def page() -> Response:
        return HTMLResponse(index or NOT_BUILT, status_code=200 if index else 503,
                            headers={**HEADERS, "Cache-Control": "no-cache"})

    @router.get("/console")
    async def console_root() -> Response:
        return page()

    @router.get("/console/{path:path}")
    async def console_path(path: str) -> Response:
        if path.startswith("api/"):
            raise _not_found(path)
        file = files.get(path)
        if file is not None:
            cache = "public, max-age=31536000, immutable" if path.startswith("assets/") else "no-cache"
            return FileResponse(file, headers={**HEADERS, "Cache-Control": cache})
        if path.startswith("assets/") or "." in path.rsplit("/", 1)[-1]:
            raise _not_found(path)  # a missing file is a 404, not the page
        return page()

    return router
