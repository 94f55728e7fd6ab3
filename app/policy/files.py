"""Reading the vocabulary and agreement documents from YAML files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from app.policy.vocabulary import Vocabulary, parse_vocabulary

MAX_FILE_BYTES = 1024 * 1024


class DocumentError(ValueError):
    """A file could not be read as a YAML mapping."""


def read_yaml(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DocumentError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DocumentError(f"{path}: {exc}") from exc


def load_vocabulary(path: Path) -> Vocabulary:
    return parse_vocabulary(read_yaml(path))


def agreement_documents(path: Path) -> list[tuple[str, Any]]:
    """(file name, document) for one YAML file or every *.yaml file in a folder."""
    files = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
    if not files:
        raise DocumentError(f"{path}: no agreement files")
    return [(str(file), read_yaml(file)) for file in files]
