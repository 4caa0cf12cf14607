"""`qwen3-api serve`: check the setup, load the model, build the platform's Gateway, run the API with uvicorn.

Everything an operator can get wrong outside the model (database, Redis, catalog, port) is checked before the
model loads, which for the real checkpoint takes minutes: a typo costs seconds and one ``qwen3-api: error:`` line.
This module is imported to build `qwen3-api --help`: nothing heavy at module level.
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys

from qwen3_api.api.settings import DEFAULTS, Settings
from qwen3_api.errors import StartupError

log = logging.getLogger("qwen3_api.serve")

_RANDOM_WEIGHTS_BANNER = (
    "WARNING: no --model given. Serving the built-in DEMO model: a tiny MoE with",
    "RANDOM WEIGHTS, so its answers are noise. It answers as '{name}' so that",
    "clients and examples work unchanged; /v1/models and /health say it is the demo.",
    "Pass --model PATH|HUB_ID (e.g. --model Qwen/Qwen3-30B-A3B) to serve a real model.",
)


def demo_banner(served_name: str) -> str:
    """The framed warning printed when `serve` falls back to the demo model."""
    lines = [line.format(name=served_name) for line in _RANDOM_WEIGHTS_BANNER]
    width = max(map(len, lines))
    rule = "#" * (width + 6)
    return "\n".join(["", rule, *[f"#  {line.ljust(width)}  #" for line in lines], rule, ""])


_PORT_HINTS = {errno.EADDRINUSE: "another process is listening there: stop it or pass --port N",
               errno.EACCES: "ports below 1024 need privileges: pass --port 8000 or another port above 1023",
               errno.EADDRNOTAVAIL: "this machine has no such address: check --host"}


def check_port(host: str, port: int) -> None:
    """Fail now, not after the model has loaded, when uvicorn could not listen on ``host:port``.

    Binds the way uvicorn does (IPv6 for a host with ':', SO_REUSEADDR) and lets go at once.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        hint = _PORT_HINTS.get(exc.errno or 0, "")
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                           + (f" ({hint})" if hint else "")) from None


def add_serve_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The API's own options (the engine's and the platform's are added beside them)."""
    g = parser.add_argument_group("server")
    g.add_argument("--served-model-name", default=DEFAULTS.served_model_name,
                   help="model id clients send and /v1/models lists (its catalog entry gives the prices)")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    g.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    g.add_argument("--max-n", type=int, default=DEFAULTS.max_n, help="largest n (choices per request) accepted")
    g.add_argument("--max-body-bytes", type=int, default=DEFAULTS.max_body_bytes,
                   help="larger request bodies get 413")
    g.add_argument("--keepalive-s", type=float, default=DEFAULTS.keepalive_s,
                   help="SSE comment sent when a stream has been silent this long (long prefills)")
    g.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (debug also shows the database migrations)")
    g.add_argument("--access-log", action="store_true",
                   help="log one line per request (logger qwen3_api.access): generation id, key label (sk-…abcd, "
                        "never the key), method, path, status, tokens, duration")
    g.add_argument("--no-console", dest="console", action="store_false",
                   help="do not serve the web console at /console (its sign-in, pages and session cookie)")
    c = parser.add_argument_group("connections and shutdown (api/server.py)")
    c.add_argument("--shutdown-timeout", type=float, default=DEFAULTS.shutdown_timeout,
                   help="on SIGTERM/SIGINT, seconds the requests in flight get to finish; the rest then end "
                        "with an error (streams: an error event and [DONE]) and are settled before the exit")
    c.add_argument("--request-header-timeout", type=float, default=10.0,
                   help="seconds a client has to send a request's headers (from its first byte); then 408")
    c.add_argument("--request-body-timeout", type=float, default=60.0,
                   help="seconds a client has to send a request's body once its headers are in; then 408")
    c.add_argument("--max-header-bytes", type=int, default=32 * 1024,
                   help="largest request head (request line + headers) accepted; larger gets 431")
    c.add_argument("--timeout-keep-alive", type=float, default=5.0,
                   help="seconds an idle keep-alive connection stays open")
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    from qwen3_api.engine.args import EngineArgs
    from qwen3_api.platform.options import add_cli_args

    p = subparsers.add_parser("serve", help="serve the OpenAI-compatible API",
                              description="Serve the OpenAI-compatible API (chat completions, completions, "
                                          "models, health, metrics) for one checkpoint. Without --model it "
                                          "serves the built-in demo model (tiny, random weights).")
    add_serve_args(p)
    EngineArgs.add_cli_args(p)
    add_cli_args(p)
    p.set_defaults(func=run)


def build_app(args: argparse.Namespace):  # noqa: ANN201 - FastAPI, imported lazily
    """Everything `serve` builds before listening: checks, catalog, gateway, engine, app.

    The catalog, the database (connect + migrate), Redis and the port are checked before the model loads;
    each failure is a :class:`StartupError`.
    """
    from qwen3_api.engine.args import EngineArgs
    from qwen3_api.platform.factory import build_gateway, load_catalog

    try:
        engine_args = EngineArgs.from_cli_args(args)  # its checks of the engine options, before anything loads
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    catalog = load_catalog(args)
    gateway = build_gateway(args)
    if getattr(args, "port", None) is not None:
        check_port(args.host, args.port)
    # Only now the heavy imports (torch: seconds): a setup mistake above is reported without waiting for them.
    from qwen3_api.api.app import create_app
    from qwen3_api.engine.async_engine import AsyncLLMEngine
    from qwen3_api.model.loader import resolve_model_path

    demo = not args.model
    if demo:
        from qwen3_api.demo.tiny import ensure_demo_model

        args.model = str(ensure_demo_model())
        print(demo_banner(args.served_model_name), file=sys.stderr, flush=True)
        log.warning("serving the demo model (RANDOM weights) from %s as %s", args.model, args.served_model_name)
    model_path = resolve_model_path(args.model, tokenizer=engine_args.tokenizer)
    args.model = engine_args.model = str(model_path)
    engine = AsyncLLMEngine.from_args(engine_args)
    log.info("context length in force: %d tokens", engine.max_model_len)
    settings = Settings(served_model_name=args.served_model_name, max_n=args.max_n,
                        max_body_bytes=args.max_body_bytes, keepalive_s=args.keepalive_s,
                        model_path=str(model_path), demo=demo, access_log=getattr(args, "access_log", False),
                        shutdown_timeout=getattr(args, "shutdown_timeout", 30.0),
                        console=getattr(args, "console", True))
    return create_app(engine, catalog, gateway, settings)


def run(args: argparse.Namespace) -> int:
    """Build the app and serve it until interrupted."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app(args)
    from qwen3_api.api.server import serve_app

    serve_app(app, args)
    return 0
