"""Migrations are history: a revision never imports live app code, which changes after it.

(import-linter checks the rings of app/; Alembic's revision files are not a
package it can import, so this reads their imports directly.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

REVISIONS = sorted((REPO / "migrations" / "versions").glob("*.py"))


def _imported_modules(source: str) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_there_are_revisions_to_check() -> None:
    assert len(REVISIONS) >= 4


@pytest.mark.parametrize("revision", REVISIONS, ids=[path.name for path in REVISIONS])
def test_a_revision_imports_no_app_code(revision: Path) -> None:
    modules = _imported_modules(revision.read_text(encoding="utf-8"))
    assert not {m for m in modules if m == "app" or m.startswith("app.")}, modules
