"""Clip indexes: the tables that list training videos or images, and how their rows become file paths and captions.

Two layouts are understood (``layout="auto"`` tells them apart by their columns):

* ``"webvid"``: the WebVid-10M CSV that the released training config reads, with columns ``videoid``, ``page_dir``
  and ``name`` (the caption). A row's video is ``<root>/<page_dir>/<videoid>.mp4``; when ``<root>`` has a
  ``videos`` sub-folder and no ``<root>/<page_dir>`` folder, the released layout ``<root>/videos/<page_dir>/...``
  is used instead.
* ``"generic"``: a CSV or JSONL file with ``path`` (absolute, or relative to ``root``, which defaults to the index's
  folder), ``caption`` and optionally ``fps`` (the source frame rate, overriding the container's).

Every other column is kept in :attr:`ClipRecord.extra`. The WebVid-10M-motion annotations (paper Sec. 5) add the
columns ``dynamic_confidence`` (0-100), ``dynamic_wording`` (a motion description) and
``dynamic_source_category``; ``dynamicrafter annotate`` adds ``motion_score`` (see :mod:`dynamicrafter.data.motion`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamicrafter.errors import UserError
from dynamicrafter.media import atomic_path

logger = logging.getLogger(__name__)

WEBVID_COLUMNS = ("videoid", "page_dir", "name")
GENERIC_COLUMNS = ("path", "caption")
FPS_COLUMN = "fps"
MOTION_CONFIDENCE_COLUMN = "dynamic_confidence"
MOTION_WORDING_COLUMN = "dynamic_wording"
MOTION_CATEGORY_COLUMN = "dynamic_source_category"
MOTION_SCORE_COLUMN = "motion_score"
LAYOUTS = ("auto", "webvid", "generic")
CAPTION_MODES = ("caption", "motion", "both")
WEBVID_VIDEO_SUFFIX = ".mp4"
WEBVID_VIDEOS_FOLDER = "videos"
INDEX_SUFFIXES = (".csv", ".jsonl")


class IndexFileError(UserError):
    """A missing, unreadable or malformed index file."""


@dataclass(frozen=True)
class ClipRecord:
    """One usable row of an index: where the file is, its caption, and every other column of the row."""

    path: str
    caption: str
    fps: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# Reading and writing tables
# ----------------------------------------------------------------------------------------------------------------


def read_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``.csv`` (header row, values as strings) or ``.jsonl`` (one JSON object per line) file."""
    path = Path(path)
    if not path.is_file():
        raise IndexFileError(f"index file not found: '{path}' (pass a .csv or .jsonl index)")
    suffix = path.suffix.lower()
    if suffix not in INDEX_SUFFIXES:
        raise IndexFileError(f"index '{path}' must end in .csv or .jsonl")
    with open(path, newline="", encoding="utf-8") as f:
        if suffix == ".csv":
            rows = [dict(row) for row in csv.DictReader(f)]
        else:
            rows = []
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise IndexFileError(f"'{path}' line {line_no} is not valid JSON ({e.msg}); fix the line") from e
                if not isinstance(row, dict):
                    raise IndexFileError(f"'{path}' line {line_no} is not a JSON object; write one object per line")
                rows.append(row)
    return rows


def table_columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """All column names of ``rows`` in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def write_table(rows: Sequence[dict[str, Any]], path: str | os.PathLike, columns: Sequence[str] | None = None) -> Path:
    """Atomically write ``rows`` as ``.csv`` or ``.jsonl`` (by extension); missing values become empty / absent."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in INDEX_SUFFIXES:
        raise IndexFileError(f"index '{path}' must end in .csv or .jsonl")
    columns = list(columns) if columns is not None else table_columns(rows)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        if suffix == ".csv":
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(row.get(k)) for k in columns})
        else:
            for row in rows:
                f.write(json.dumps({k: row[k] for k in columns if k in row and row[k] is not None}) + "\n")
    return path


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def parse_float(value: Any) -> float | None:
    """A number from a table cell, or ``None`` when the cell is empty, missing or not a finite number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ----------------------------------------------------------------------------------------------------------------
# Layouts and paths
# ----------------------------------------------------------------------------------------------------------------


def detect_layout(columns: Sequence[str], index_path: str | os.PathLike = "index") -> str:
    """``"webvid"`` or ``"generic"`` from the column names, with a one-line error when neither fits."""
    if all(c in columns for c in WEBVID_COLUMNS):
        return "webvid"
    if "path" in columns:
        return "generic"
    raise IndexFileError(f"index '{index_path}' has neither a 'path' column nor the WebVid columns "
                      f"{', '.join(WEBVID_COLUMNS)}; add a 'path' column (video/image path) and a 'caption' column")


class PathResolver:
    """Turns index rows into absolute file paths (see the module docstring for the rules)."""

    def __init__(self, index_path: str | os.PathLike, layout: str, root: str | os.PathLike | None = None) -> None:
        self.layout = layout
        base = Path(root) if root is not None else Path(index_path).resolve().parent
        self.root = base
        self._webvid_root: Path | None = None

    def location_key(self, row: dict[str, Any]) -> tuple[str, ...]:
        """The columns that identify a row's file (used to match rows between two versions of an index)."""
        if self.layout == "webvid":
            return str(row.get("page_dir", "")), str(row.get("videoid", ""))
        return (str(row.get("path", "")),)

    def has_location(self, row: dict[str, Any]) -> bool:
        return all(part.strip() for part in self.location_key(row))

    def __call__(self, row: dict[str, Any]) -> Path:
        if self.layout == "webvid":
            page_dir, videoid = self.location_key(row)
            return self._webvid_base(page_dir) / page_dir / f"{videoid}{WEBVID_VIDEO_SUFFIX}"
        path = Path(str(row["path"]))
        return path if path.is_absolute() else self.root / path

    def _webvid_base(self, page_dir: str) -> Path:
        if self._webvid_root is None:
            videos = self.root / WEBVID_VIDEOS_FOLDER
            released_layout = videos.is_dir() and not (self.root / page_dir).is_dir()
            self._webvid_root = videos if released_layout else self.root
        return self._webvid_root


# ----------------------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class IndexFilter:
    """Which rows of an index to keep and how to caption them.

    ``caption_mode``: ``"caption"`` (the row's caption), ``"motion"`` (the ``dynamic_wording`` column, falling back
    to the caption when a row has none) or ``"both"`` (``caption + ", " + wording``). ``min_dynamic_confidence``
    (0-100) keeps rows whose ``dynamic_confidence`` is at least that; ``min_motion_score`` keeps rows whose
    ``motion_score`` is at least that. Rows without the value a filter needs are dropped.
    """

    caption_mode: str = "caption"
    min_dynamic_confidence: float | None = None
    min_motion_score: float | None = None

    def __post_init__(self) -> None:
        if self.caption_mode not in CAPTION_MODES:
            raise UserError(f"caption_mode must be one of {', '.join(CAPTION_MODES)}, got {self.caption_mode!r}")


def load_records(index_path: str | os.PathLike, root: str | os.PathLike | None = None, layout: str = "auto",
                 filters: IndexFilter | None = None) -> list[ClipRecord]:
    """Read an index and return the rows that pass ``filters`` as :class:`ClipRecord` (in index order)."""
    filters = filters or IndexFilter()
    if layout not in LAYOUTS:
        raise UserError(f"index layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    rows = read_table(index_path)
    columns = table_columns(rows)
    if not rows:
        raise IndexFileError(f"index '{index_path}' holds no rows; add at least one clip")
    layout = detect_layout(columns, index_path) if layout == "auto" else layout
    _check_filter_columns(columns, filters, index_path)
    resolve = PathResolver(index_path, layout, root)
    caption_column = "name" if layout == "webvid" else "caption"
    records: list[ClipRecord] = []
    dropped = {"no file location": 0, "filtered": 0}
    for row in rows:
        if not resolve.has_location(row):
            dropped["no file location"] += 1
            continue
        if not _passes(row, filters):
            dropped["filtered"] += 1
            continue
        caption = _caption(row, caption_column, filters.caption_mode)
        extra = {k: v for k, v in row.items() if k not in (caption_column, "path")}
        records.append(ClipRecord(str(resolve(row)), caption, parse_float(row.get(FPS_COLUMN)), extra))
    logger.info("index %s: %d of %d rows kept (%s)", index_path, len(records), len(rows),
                ", ".join(f"{n} dropped: {why}" for why, n in dropped.items() if n) or "none dropped")
    if not records:
        raise IndexFileError(f"no row of index '{index_path}' is usable ({dropped['no file location']} without a file "
                          f"location, {dropped['filtered']} filtered out); loosen the filters or fix the index")
    return records


def _check_filter_columns(columns: Sequence[str], filters: IndexFilter, index_path: str | os.PathLike) -> None:
    needs = []
    if filters.min_dynamic_confidence is not None:
        needs.append((MOTION_CONFIDENCE_COLUMN, "use the WebVid-10M-motion annotation CSV"))
    if filters.caption_mode != "caption":
        needs.append((MOTION_WORDING_COLUMN, "use the WebVid-10M-motion annotation CSV"))
    if filters.min_motion_score is not None:
        needs.append((MOTION_SCORE_COLUMN, "run 'dynamicrafter annotate' on it first"))
    for column, fix in needs:
        if column not in columns:
            raise IndexFileError(f"index '{index_path}' has no '{column}' column needed by the chosen filter; {fix}")


def _passes(row: dict[str, Any], filters: IndexFilter) -> bool:
    for column, minimum in ((MOTION_CONFIDENCE_COLUMN, filters.min_dynamic_confidence),
                            (MOTION_SCORE_COLUMN, filters.min_motion_score)):
        if minimum is None:
            continue
        value = parse_float(row.get(column))
        if value is None or value < minimum:
            return False
    return True


def _caption(row: dict[str, Any], caption_column: str, mode: str) -> str:
    caption = str(row.get(caption_column) or "").strip()
    wording = str(row.get(MOTION_WORDING_COLUMN) or "").strip()
    if mode == "motion" and wording:
        return wording
    if mode == "both" and wording:
        return f"{caption}, {wording}" if caption else wording
    return caption
