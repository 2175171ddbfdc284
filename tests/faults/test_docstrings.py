"""The house rule of tests/test_layering.py, kept for tests/faults/: every test function
states the behaviour it checks in its docstring."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FILES = sorted(Path(__file__).resolve().parent.glob("test_*.py"))


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_fault_test_has_a_docstring(path: Path) -> None:
    """Each test_* function in a tests/faults module has a docstring."""
    tree = ast.parse(path.read_text())
    missing = [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
        and not ast.get_docstring(node)
    ]
    assert not missing
