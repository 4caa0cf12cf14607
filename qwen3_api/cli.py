"""The `qwen3-api` command: serve | make-tiny-model | keys ... | usage.

Each subcommand lives beside the code it drives and exposes ``register(subparsers)``; the parser sets
``func`` to the callable that runs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module that defines the subcommand(s) -> imported lazily so `qwen3-api --help` stays fast
SUBCOMMAND_MODULES = [
    "qwen3_api.model.tiny",
    "qwen3_api.api.serve",
    "qwen3_api.platform.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwen3-api", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from qwen3_api.model.errors import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CheckpointError as exc:  # a model that cannot be found, fetched or loaded: say why, no traceback
        print(f"qwen3-api: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
