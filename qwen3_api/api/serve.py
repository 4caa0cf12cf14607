"""`qwen3-api serve`: load the model, build the platform's Gateway, and run the API with uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("qwen3_api.serve")

DEFAULT_SERVED_NAME = "qwen/qwen3-30b-a3b"
_RANDOM_WEIGHTS_BANNER = """
################################################################################
#  WARNING: no --model given. Serving the built-in DEMO model: a tiny MoE with  #
#  RANDOM WEIGHTS. Its answers are noise. Pass --model PATH|HUB_ID (for example #
#  --model Qwen/Qwen3-30B-A3B) to serve a real checkpoint.                      #
################################################################################
"""


def add_serve_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The API's own options (the engine's and the platform's are added beside them)."""
    g = parser.add_argument_group("server")
    g.add_argument("--served-model-name", default=DEFAULT_SERVED_NAME,
                   help="model id clients send and /v1/models lists (its catalog entry gives the prices)")
    g.add_argument("--host", default="127.0.0.1")
    g.add_argument("--port", type=int, default=8000)
    g.add_argument("--max-n", type=int, default=8, help="largest n (choices per request) accepted")
    g.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024,
                   help="larger request bodies get 413")
    g.add_argument("--keepalive-s", type=float, default=5.0,
                   help="SSE comment sent when a stream has been silent this long (long prefills)")
    g.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    from qwen3_api.engine.args import EngineArgs
    from qwen3_api.platform.factory import add_cli_args

    p = subparsers.add_parser("serve", help="serve the OpenAI-compatible API",
                              description="Serve the OpenAI-compatible API (chat completions, completions, "
                                          "models, health, metrics) for one checkpoint.")
    add_serve_args(p)
    EngineArgs.add_cli_args(p)
    add_cli_args(p)
    p.set_defaults(func=run)


def build_app(args: argparse.Namespace):  # noqa: ANN201 - FastAPI, imported lazily
    """Everything `serve` builds before listening: engine, catalog, gateway, app."""
    from qwen3_api.api.app import Settings, create_app
    from qwen3_api.engine.args import EngineArgs
    from qwen3_api.engine.async_engine import AsyncLLMEngine
    from qwen3_api.model.loader import resolve_model_path
    from qwen3_api.platform.factory import build_gateway, load_catalog

    if not args.model:
        from qwen3_api.model.tiny import ensure_demo_model

        args.model = str(ensure_demo_model())
        print(_RANDOM_WEIGHTS_BANNER, file=sys.stderr, flush=True)
        log.warning("serving the demo model with RANDOM weights from %s", args.model)
    model_path = resolve_model_path(args.model)
    args.model = str(model_path)
    catalog = load_catalog(args)
    engine_args = EngineArgs.from_cli_args(args)
    engine = AsyncLLMEngine.from_args(engine_args)
    log.info("context length in force: %d tokens", engine.max_model_len)
    gateway = build_gateway(args)
    settings = Settings(served_model_name=args.served_model_name, max_n=args.max_n,
                        max_body_bytes=args.max_body_bytes, keepalive_s=args.keepalive_s,
                        model_path=str(model_path))
    return create_app(engine, catalog, gateway, settings)


def run(args: argparse.Namespace) -> int:
    """Build the app and serve it until interrupted."""
    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app(args)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                timeout_graceful_shutdown=5)
    return 0
