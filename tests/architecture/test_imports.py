"""The layering, checked on the source: a star with api/ at its hub, engine -> model -> kernels below it.

    api/ ──> platform/   (keys, money)        each of platform/, chat/, engine/ imports none of the other two,
      ├────> chat/        (text above ids)     and none imports api/; chat/ reaches the engine only through the
      └────> engine/ ──> model/ ──> kernels/   TokenConstraint protocol (structural: no import)

Every import counts: module level, function-local and TYPE_CHECKING ones, so a lazy import cannot hide a circle.
"""

from __future__ import annotations

import pytest

from tests.architecture.imports import PACKAGE, cycles, graph

# What each part of the package may import (besides itself and the errors module at the root).
ALLOWED: dict[str, set[str]] = {
    "api": {"platform", "chat", "engine", "model", "demo", "root"},  # serve: the checkpoint, or the demo model
    "platform": set(),
    "chat": set(),
    "engine": {"model", "kernels"},
    "model": {"kernels"},
    "kernels": set(),
    # tiny_fp8 writes FP8 checkpoints with the block arithmetic the kernels and the loader read (fp8_blocks)
    "demo": {"model", "kernels"},
    "llm": {"engine", "model", "chat"},  # the offline facade: LLM.generate / LLM.chat
    "cli": {"api", "platform", "model", "demo"},  # imports each subcommand's module to register it
    "root": {"llm", "engine"},  # `from qwen3_api import LLM, SamplingParams`, lazily
    "errors": set(),
}


def _part(module: str) -> str:
    parts = module.split(".")
    return "root" if len(parts) == 1 else parts[1]


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph()


def test_no_import_cycles(edges: dict[str, set[str]]) -> None:
    assert cycles(edges) == []


def test_layers_import_only_downwards(edges: dict[str, set[str]]) -> None:
    bad = []
    for module, targets in sorted(edges.items()):
        part = _part(module)
        assert part in ALLOWED, f"{module}: a new part of the package; add it to ALLOWED with its rule"
        for target in sorted(targets):
            other = _part(target)
            if other not in (part, "errors") and other not in ALLOWED[part]:
                bad.append(f"{module} -> {target}")
    assert bad == []


def test_the_checker_sees_lazy_and_type_only_imports(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """A cycle hidden in a function body or under TYPE_CHECKING is still a cycle."""
    from tests.architecture import imports

    pkg = tmp_path / PACKAGE
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    from qwen3_api.a.y import g\n")
    (pkg / "a" / "y.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .x import f\n")
    monkeypatch.setattr(imports, "ROOT", pkg)
    assert imports.cycles(imports.graph()) == [["qwen3_api.a.x", "qwen3_api.a.y"]]
