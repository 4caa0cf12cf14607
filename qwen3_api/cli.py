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
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
