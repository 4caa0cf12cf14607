"""The `qwen3-api` command: serve | make-tiny-model | keys ... | usage.

Each subcommand lives beside the code it drives and exposes ``register(subparsers)``; the parser sets
``func`` to the callable that runs it. Registering must stay cheap (no torch, SQLAlchemy or FastAPI at module
level in those modules): every ``--help`` builds the whole parser.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

# module that defines the subcommand(s) -> imported lazily so `qwen3-api --help` stays fast
SUBCOMMAND_MODULES = [
    "qwen3_api.demo.tiny",
    "qwen3_api.api.serve",
    "qwen3_api.platform.cli",
]


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` for options with a real default; None, "" and off-switches say nothing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == "" \
                or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub)parser of the command shows its defaults: add_subparsers hands its class down."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The ``qwen3-api`` parser with every subcommand registered."""
    parser = _Parser(prog="qwen3-api", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; an operator's mistake (bad URL, busy port, missing model) is one line and exit 2."""
    from qwen3_api.errors import StartupError
    from qwen3_api.model.errors import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CheckpointError, StartupError) as exc:  # say why, no traceback
        print(f"qwen3-api: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
