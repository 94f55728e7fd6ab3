"""Reading the vocabulary and agreement documents from YAML files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from app.policy.vocabulary import Vocabulary, parse_vocabulary

MAX_FILE_BYTES = 1024 * 1024


class DocumentError(ValueError):
    """A file could not be read as YAML; a syntax error is named by its line and column."""


def _place(line: int, column: int) -> str:
    """PyYAML's 0-based mark as an editor shows it: 1-based."""
    return f"{line + 1}:{column + 1}"


def _syntax_error(path: Path, exc: yaml.MarkedYAMLError) -> DocumentError:
    """`file:line:column: problem (context at line:column)`."""
    if exc.problem_mark is None:
        return DocumentError(f"{path}: {exc}")
    place = _place(exc.problem_mark.line, exc.problem_mark.column)
    message = f"{path}:{place}: {exc.problem}"
    if exc.context:
        mark = exc.context_mark
        at = "" if mark is None else f" at {_place(mark.line, mark.column)}"
        message += f" ({exc.context}{at})"
    return DocumentError(message)


def read_yaml(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DocumentError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(path, exc) from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DocumentError(f"{path}: {exc}") from exc


def load_vocabulary(path: Path) -> Vocabulary:
    return parse_vocabulary(read_yaml(path))


def read_agreement_files(path: Path) -> tuple[list[tuple[str, Any]], list[DocumentError]]:
    """(file name, document) for one YAML file or every *.yaml and *.yml file in a
    folder, and the error of every file that could not be read (not only the first)."""
    if path.is_dir():
        files = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml"))
    else:
        files = [path] if path.is_file() else []
    if not files:
        raise DocumentError(f"{path}: no agreement files")
    documents: list[tuple[str, Any]] = []
    unreadable: list[DocumentError] = []
    for file in files:
        try:
            documents.append((str(file), read_yaml(file)))
        except DocumentError as exc:
            unreadable.append(exc)
    return documents, unreadable


def agreement_documents(path: Path) -> list[tuple[str, Any]]:
    """(file name, document) of every agreement file; one DocumentError names each file
    that could not be read."""
    documents, unreadable = read_agreement_files(path)
    if unreadable:
        raise DocumentError("\n".join(str(exc) for exc in unreadable))
    return documents
