"""`qwen3-api ... --help`: answers without importing the heavy stack, and shows every default."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest

from qwen3_api.cli import build_parser

COMMANDS = [[], ["serve"], ["make-tiny-model"], ["keys"], ["keys", "create"], ["keys", "list"], ["keys", "show"],
            ["keys", "revoke"], ["keys", "top-up"], ["keys", "reset-reserved"], ["usage"]]
# Each costs a quarter of a second (SQLAlchemy) to seconds (torch) of import before any help is printed.
HEAVY = ("torch", "sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "tokenizers", "safetensors", "numpy")

_PROBE = """
import contextlib, io, json, sys
from qwen3_api.cli import main
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(argv + ["--help"])
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_help_of_every_command_imports_nothing_heavy() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(COMMANDS)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    loaded = set(json.loads(out))
    assert "qwen3_api" in loaded and not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def _parsers() -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser) -> None:
        found[parser.prog] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    return found


def _help(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())  # the formatter wraps lines anywhere


@pytest.mark.parametrize("prog", sorted(_parsers()))
def test_help_shows_each_default(prog: str) -> None:
    parser = _parsers()[prog]
    text = _help(parser)
    for action in parser._actions:
        default = action.default
        if not action.option_strings or default in (None, "", argparse.SUPPRESS) or default is False:
            continue
        explicit = "default:" in (action.help or "")  # the help words its default itself ("default: 30")
        assert explicit or f"(default: {default})" in text, f"{prog}: {action.option_strings} default not shown"
    if prog != "qwen3-api":
        assert parser.description, f"{prog} --help has no description"


def test_serve_help_names_address_port_and_the_demo_model() -> None:
    text = _help(_parsers()["qwen3-api serve"])
    assert "--host HOST address to listen on" in text and "(default: 127.0.0.1)" in text
    assert re.search(r"--port PORT .*\(default: 8000\)", text)
    assert "--model MODEL checkpoint directory or hub id (default: the built-in demo model, random weights)" in text
    assert "--access-log" in text


def test_usage_help_describes_the_command() -> None:
    assert "Tokens and cost from the ledger" in _help(_parsers()["qwen3-api usage"])
