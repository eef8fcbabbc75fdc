"""Batch manifests: a CSV (with a header row) or JSONL file of jobs, validated whole before anything is sent.

Columns: ``id`` (required, unique: the row's idempotency key), ``video``, ``audio``, ``model``,
``sync_mode``, ``temperature``, ``active_speaker`` (``auto``, or ``FRAME@X,Y``; in JSONL also an object),
``output``, ``webhook_url``, ``max_cost``. Relative paths are read from the manifest's folder. Every bad row
is reported with its line number and a fix, all at once.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import InvalidRequestError, LipsyncError
from .schema import ActiveSpeaker, LipsyncRequest

__all__ = ["COLUMNS", "ManifestError", "ManifestRow", "RowProblem", "read_manifest"]

COLUMNS = (
    "id",
    "video",
    "audio",
    "model",
    "sync_mode",
    "temperature",
    "active_speaker",
    "output",
    "webhook_url",
    "max_cost",
)
_POINT = re.compile(r"^\s*(\d+)\s*@\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class ManifestRow:
    line: int
    id: str
    request: LipsyncRequest
    output: Path | None = None


@dataclass(frozen=True)
class RowProblem:
    """What is wrong with one row (line 1 is the header of a CSV)."""

    line: int
    id: str | None
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (id {self.id})" if self.id else "")
        return f"{where}: {self.message}" + (f" (fix: {self.fix})" if self.fix else "")


class ManifestError(InvalidRequestError):
    """The manifest has problems; nothing was sent. ``problems`` lists every one of them."""

    def __init__(self, path: Path, problems: Iterable[RowProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: p.line)
        shown = "; ".join(str(p) for p in self.problems[:5])
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(
            f"{path}: {len(self.problems)} problem(s): {shown}{more}",
            field="manifest",
            fix="fix the rows named and run again; nothing was sent",
        )
        self.path = path


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Parse and validate every row (files exist, fields are valid); raise :class:`ManifestError` with every
    problem found. No network, no media probing (the batch planner does that)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidRequestError(
            f"cannot read manifest {path}: {exc.strerror or exc}", field="manifest", fix="check the path"
        ) from None
    raw, problems = _records(path, text)
    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    for line, record in raw:
        row_id = str(record.get("id") or "").strip() or None
        if row_id is None:
            problems.append(
                RowProblem(line, None, "no id", "give every row a unique id (its idempotency key)")
            )
            continue
        if row_id in seen:
            problems.append(
                RowProblem(
                    line, row_id, f"duplicate id (first on line {seen[row_id]})", "make every id unique"
                )
            )
            continue
        seen[row_id] = line
        try:
            rows.append(_row(path.parent, line, row_id, record))
        except LipsyncError as exc:
            problems.append(RowProblem(line, row_id, exc.message, exc.fix))
    if problems:
        raise ManifestError(path, problems)
    if not rows:
        raise ManifestError(path, [RowProblem(1, None, "no rows", "add one row per job")])
    return rows


def _records(path: Path, text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[RowProblem]]:
    if path.suffix.lower() in (".jsonl", ".ndjson") or text.lstrip().startswith("{"):
        return _jsonl(text)
    return _csv(text)


def _csv(text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[RowProblem]]:
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    problems = _columns(1, header)
    if "id" not in header:
        return [], problems
    records = []
    for index, record in enumerate(reader, start=2):
        cleaned = {k.strip(): (v or "").strip() for k, v in record.items() if k is not None}
        if not any(cleaned.values()):
            continue  # a blank line
        records.append((index, {k: v for k, v in cleaned.items() if v != "" and k in COLUMNS}))
    return records, problems


def _jsonl(text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[RowProblem]]:
    records: list[tuple[int, dict[str, Any]]] = []
    problems: list[RowProblem] = []
    for index, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(RowProblem(index, None, f"not JSON: {exc.msg}", "one JSON object per line"))
            continue
        if not isinstance(record, dict):
            problems.append(RowProblem(index, None, "not a JSON object", "one JSON object per line"))
            continue
        unknown = _columns(index, list(record), row_id=str(record.get("id") or "") or None)
        problems += unknown
        if not unknown:
            records.append((index, {k: v for k, v in record.items() if v is not None}))
    return records, problems


def _columns(line: int, names: list[str], *, row_id: str | None = None) -> list[RowProblem]:
    problems = []
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        problems.append(
            RowProblem(
                line,
                row_id,
                f"unknown column(s) {', '.join(map(repr, unknown))}",
                f"use only: {', '.join(COLUMNS)}",
            )
        )
    if "id" not in names:
        problems.append(RowProblem(line, row_id, "no 'id' column", "add an id column: each row's unique key"))
    return problems


def _row(base: Path, line: int, row_id: str, record: Mapping[str, Any]) -> ManifestRow:
    fields: dict[str, Any] = {}
    for name in ("model", "sync_mode", "temperature", "webhook_url", "max_cost"):
        if name in record:
            fields[name] = record[name]
    for name in ("video", "audio"):
        if name not in record:
            raise InvalidRequestError(f"no {name}", field=name, fix=f"give the row a {name} path or URL")
        fields[name] = _media(base, str(record[name]))
    if "active_speaker" in record:
        fields["active_speaker"] = _speaker(record["active_speaker"])
    try:
        request = LipsyncRequest(**fields)
    except ValidationError as exc:  # pragma: no cover - LipsyncRequest raises typed errors itself
        raise InvalidRequestError.from_validation(exc, "LipsyncRequest") from None
    output = Path(str(record["output"])) if "output" in record else None
    if output is not None and not output.is_absolute():
        output = base / output
    return ManifestRow(line=line, id=row_id, request=request, output=output)


def _media(base: Path, value: str) -> str:
    if "://" in value or value.startswith("data:"):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _speaker(value: Any) -> ActiveSpeaker:
    if isinstance(value, Mapping):
        speaker: ActiveSpeaker = ActiveSpeaker.model_validate(dict(value))
        return speaker
    text = str(value).strip()
    if text.lower() == "auto":
        return ActiveSpeaker.automatic()
    match = _POINT.match(text)
    if match is None:
        raise InvalidRequestError(
            f"active_speaker {text!r} is neither 'auto' nor FRAME@X,Y",
            field="active_speaker",
            fix="write auto, or e.g. 0@320,180 (frame 0, pixel 320,180)",
        )
    frame, x, y = match.groups()
    return ActiveSpeaker.at(int(frame), float(x), float(y))
