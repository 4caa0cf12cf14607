"""Serving options that are neither the engine's nor the platform's; `serve`'s flags take their defaults here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Settings:
    """What the API layer needs to know about how it is served."""

    served_model_name: str = "qwen/qwen3-30b-a3b"
    max_n: int = 8  # the most choices (n) one request may ask for
    max_body_bytes: int = 8 * 1024 * 1024  # larger request bodies get 413
    keepalive_s: float = 5.0  # an SSE comment after this long without an event (long prefills)
    # Path of the model directory: the chat layer reads the tokenizer and chat template from it.
    model_path: str | None = None
    # Close the engine with the app (tests that share one engine across apps turn it off).
    shutdown_engine: bool = True
    # At shutdown, requests in flight get this long to finish before they are ended and settled (drain.py).
    shutdown_timeout: float = 30.0
    # The built-in demo model (random weights) under the served name: /v1/models and /health say so.
    demo: bool = False
    # One line per request on the qwen3_api.access logger (serve --access-log).
    access_log: bool = False
    # The web console at /console (api/console/): `serve` turns it on unless --no-console.
    console: bool = False


DEFAULTS = Settings()
