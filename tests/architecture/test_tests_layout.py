"""The tests' own layout, checked on their source: each suite folder is a package with at most one helper module,
``helpers.py`` (no fixtures: those are in ``conftest.py``), and its imports are absolute and reach no test module
and no conftest (``from tests.api.helpers import ...``, never ``from tests.api.conftest import ...``).

Checked for every suite in SUITES.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
SUITES = ("api", "chat", "console", "demo", "e2e", "engine", "gguf", "kernels", "model", "platform")
# Modules no test may import: a test module or a conftest (pytest imports those, tests do not).
OFF_LIMITS = re.compile(r"tests(\.\w+)*\.(conftest|test_\w+)")


def _imports(path: Path) -> Iterator[tuple[int, int, list[str]]]:
    """(line, relative level, the dotted names it imports) for every import in the file, function-local ones too."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield node.lineno, 0, [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            yield node.lineno, node.level, [base, *(f"{base}.{a.name}" for a in node.names)]


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Attribute) and target.attr == "fixture") or (
        isinstance(target, ast.Name) and target.id == "fixture")


@pytest.mark.parametrize("suite", SUITES)
def test_a_suite_is_a_package_with_one_helper_module(suite: str) -> None:
    names = sorted(p.name for p in (TESTS / suite).glob("*.py"))
    assert "__init__.py" in names
    assert [n for n in names if n not in ("__init__.py", "conftest.py", "helpers.py") and not n.startswith("test_")] == []
    helpers = TESTS / suite / "helpers.py"
    if helpers.exists():
        fixtures = [node.name for node in ast.walk(ast.parse(helpers.read_text(encoding="utf-8")))
                    if isinstance(node, ast.FunctionDef) and any(map(_is_fixture, node.decorator_list))]
        assert fixtures == [], "fixtures belong in conftest.py"


@pytest.mark.parametrize("suite", SUITES)
def test_imports_are_absolute_and_reach_no_test_module_or_conftest(suite: str) -> None:
    local = {p.stem for p in TESTS.rglob("*.py")}  # a bare `import helpers` / `from platform_harness import ...`
    bad = []
    for path in sorted((TESTS / suite).glob("*.py")):
        for line, level, names in _imports(path):
            where = f"{suite}/{path.name}:{line}"
            if level:
                bad.append(f"{where}: relative import")
            elif any(OFF_LIMITS.fullmatch(name) for name in names):
                bad.append(f"{where}: imports a test module or a conftest ({names[0]})")
            elif names[0].split(".")[0] in local:
                bad.append(f"{where}: rootdir-style import of a test file ({names[0]})")
    assert bad == []


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    path = tmp_path / "test_x.py"
    path.write_text("from tests.api.conftest import MODEL\nfrom .helpers import a\nfrom tests.e2e import conftest\n"
                    "\n\ndef f():\n    from tests.api.test_chat import TOOLS\n")
    names = [n for _, _, ns in _imports(path) for n in ns]
    assert [n for n in names if OFF_LIMITS.fullmatch(n)] == ["tests.api.conftest", "tests.e2e.conftest",
                                                             "tests.api.test_chat"]
    assert [level for _, level, _ in _imports(path)] == [0, 1, 0, 0]
    assert not OFF_LIMITS.fullmatch("tests.api.helpers") and not OFF_LIMITS.fullmatch("tests.model.helpers")
    tree = ast.parse("@pytest.fixture\ndef a(): ...\n@pytest.fixture(scope='session')\ndef b(): ...\n"
                     "@fixture\ndef c(): ...\n@cache\ndef d(): ...\n")
    assert [node.name for node in tree.body if any(map(_is_fixture, node.decorator_list))] == ["a", "b", "c"]
