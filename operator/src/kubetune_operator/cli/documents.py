"""Resource documents given on the command line (`kubetune render`, `kubetune run`): read, parsed as
the API server parses YAML (kubetune_operator.yaml12) and validated against the CRD schemas, every
error naming its file, document and field."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubetune_operator import yaml12
from kubetune_operator.api import Resource
from kubetune_operator.api.validation import parse
from kubetune_operator.builders.graph import key
from kubetune_operator.errors import ValidationFailed, shorten

# Errors listed per document: ten thousand unknown fields need not be ten thousand lines.
MAX_ERRORS_SHOWN = 20

@dataclass(frozen=True)
class Document:
    source: str  # "file.yaml#index"
    body: dict[str, Any]


def load_documents(paths: Iterable[Path]) -> list[Document]:
    paths = [Path(path) for path in paths]
    documents = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValidationFailed(f"{path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ValidationFailed(f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})") from exc
        try:
            for index, (_, body) in enumerate(yaml12.load_all(text)):
                if body is not None:
                    documents.append(Document(f"{path}#{index}", body))
        except yaml12.YamlError as exc:
            raise ValidationFailed(f"{path}:{exc.line}:{exc.column}: {exc.message}") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            raise ValidationFailed(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from exc
    if not documents:
        # Nothing to do is never success: an empty file or a wrong glob would look like a finished run.
        raise ValidationFailed(f"no resource documents in {', '.join(map(str, paths))}")
    return documents


def describe(document: Document) -> str:
    body = document.body if isinstance(document.body, dict) else {}
    name = (body.get("metadata") or {}).get("name", "?") if isinstance(body.get("metadata"), dict) else "?"
    return f"{document.source} ({shorten(str(body.get('kind', '?')))} {shorten(str(name))})"


def validate_all(documents: list[Document]) -> list[Resource]:
    """Every document against the CRD schemas; one error lists every bad field of every document."""
    problems = []
    resources = []
    first_seen: dict[tuple[str, str, str], str] = {}
    for document in documents:
        resource, errors = parse(document.body)
        if errors:
            shown = errors[:MAX_ERRORS_SHOWN]
            problems += [f"{describe(document)}: {error}" for error in shown]
            if len(errors) > len(shown):
                problems.append(f"{describe(document)}: … and {len(errors) - len(shown)} more errors")
            continue
        if key(resource) in first_seen:
            problems.append(f"{describe(document)}: defined twice (first in {first_seen[key(resource)]})")
        first_seen.setdefault(key(resource), document.source)
        resources.append(resource)
    if problems:
        raise ValidationFailed("\n".join(problems))
    return resources
