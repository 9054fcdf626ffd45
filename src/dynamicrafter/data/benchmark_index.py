"""Video indexes of the benchmark data sets (``dynamicrafter benchmark --make-index``) and probing of their videos.

UCF-101 (``UCF-101/<Class>/v_<Class>_gXX_cYY.avi``): the caption is the class name made readable ("ApplyEyeMakeup"
-> "apply eye makeup"). MSR-VTT (test videos ``video7010.mp4`` ... found under the root): one caption per video,
chosen seeded among its annotated sentences. Both write a generic index (path relative to the index's folder,
caption, fps) that :func:`dynamicrafter.data.index.load_records` reads.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dynamicrafter.data.index import ClipRecord, write_table
from dynamicrafter.data.video import VideoDecodeError, VideoReader
from dynamicrafter.errors import UserError
from dynamicrafter.options import DEFAULT_SEED

SOURCE_VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
UCF_FILE = re.compile(r"^v_(?P<cls>[A-Za-z0-9]+)_g\d+_c\d+$")
CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
MSRVTT_SPLIT = "test"
MAKE_INDEX_KINDS = ("ucf101", "msrvtt")
INDEX_COLUMNS = ("path", "caption", "fps")


# ----------------------------------------------------------------------------------------------------------------
# Probing
# ----------------------------------------------------------------------------------------------------------------

def probe_record(record: ClipRecord) -> tuple[int, float] | str:
    """``(frames, fps)`` of a record's video, or the reason it cannot be used ("missing", "unreadable")."""
    if not Path(record.path).is_file():
        return "missing"
    try:
        with VideoReader(record.path, fps=record.fps) as reader:
            return len(reader), record.fps or reader.fps
    except (VideoDecodeError, OSError):
        return "unreadable"


def probe_fps(path: Path) -> float | None:
    """The frame rate in a video's header, or None when the file cannot be read."""
    try:
        with VideoReader(path) as reader:
            return reader.fps
    except (VideoDecodeError, OSError):
        return None


# ----------------------------------------------------------------------------------------------------------------
# Index builders
# ----------------------------------------------------------------------------------------------------------------

def readable_class_name(name: str) -> str:
    """UCF-101 class folder -> text prompt: ``ApplyEyeMakeup`` -> ``apply eye makeup``, ``YoYo`` -> ``yo yo``."""
    return CAMEL_BOUNDARY.sub(" ", name.replace("_", " ")).lower().strip()


def _index_rows(entries: list[tuple[Path, str]], out: Path, progress: bool) -> tuple[list[dict[str, Any]], int]:
    """Rows (path relative to the index's folder, caption, fps) and the number of unreadable videos."""
    base = out.resolve().parent
    rows, unreadable = [], 0
    for path, caption in tqdm(entries, desc="reading video headers", unit="video", disable=not progress):
        fps = probe_fps(path)
        unreadable += fps is None
        rows.append({"path": os.path.relpath(path.resolve(), base), "caption": caption,
                     "fps": None if fps is None else round(fps, 6)})
    return rows, unreadable


def _split_names(split_list: Path | None) -> set[str] | None:
    if split_list is None:
        return None
    if not split_list.is_file():
        raise UserError(f"split list not found: '{split_list}' (UCF-101's ucfTrainTestlist/testlist0X.txt)")
    names = {Path(line.split()[0]).name for line in split_list.read_text().splitlines() if line.strip()}
    if not names:
        raise UserError(f"split list '{split_list}' lists no videos")
    return names


def _videos_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SOURCE_VIDEO_EXTENSIONS)


def make_ucf101_index(root: Path, out: Path, split_list: Path | None = None, progress: bool = True
                      ) -> dict[str, int]:
    """Index of ``root/<Class>/v_<Class>_gXX_cYY.avi`` (a flat folder works too): caption = readable class name.

    ``split_list`` (e.g. ``testlist01.txt``) keeps only the listed videos. Returns counts for the summary line.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"UCF-101 folder not found: '{root}' (pass --root UCF-101/, the folder of class folders)")
    videos = _videos_under(root)
    wanted = _split_names(split_list)
    if wanted is not None:
        videos = [p for p in videos if p.name in wanted]
    if not videos:
        raise UserError(f"no videos (.avi/.mp4 ...) under '{root}'" + (" in the split list" if wanted else ""))
    entries = []
    for path in videos:
        # the class folder names the class (UCF's HandstandPushups/ holds v_HandStandPushups_*.avi); a flat folder
        # falls back on the file name
        match = UCF_FILE.match(path.stem)
        class_name = path.parent.name if path.parent != root or not match else match.group("cls")
        entries.append((path, readable_class_name(class_name)))
    rows, unreadable = _index_rows(entries, out, progress)
    write_table(rows, out, columns=INDEX_COLUMNS)
    missing = len(wanted) - len(videos) if wanted is not None else 0
    return {"videos": len(rows), "classes": len({c for _, c in entries}), "unreadable": unreadable,
            "listed_but_missing": missing}


def _msrvtt_annotations(annotations: Path) -> tuple[list[str], dict[str, list[tuple[int, str]]]]:
    """The test video ids of an MSR-VTT annotation file and each video's sentences as (sen_id, caption)."""
    try:
        data = json.loads(annotations.read_text())
        videos, sentences = data["videos"], data["sentences"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"'{annotations}' is not an MSR-VTT annotation file with 'videos' and 'sentences' ({e})") \
            from e
    test_ids = [v["video_id"] for v in videos if v.get("split", MSRVTT_SPLIT) == MSRVTT_SPLIT]
    if not test_ids:
        raise UserError(f"'{annotations}' lists no test videos (split 'test'); pass test_videodatainfo.json")
    captions: dict[str, list[tuple[int, str]]] = {}
    for s in sentences:
        captions.setdefault(s["video_id"], []).append((int(s.get("sen_id", 0)), str(s["caption"]).strip()))
    return test_ids, captions


def make_msrvtt_index(root: Path, annotations: Path, out: Path, seed: int = DEFAULT_SEED, progress: bool = True
                      ) -> dict[str, int]:
    """Index of MSR-VTT's test videos (``split == "test"`` in the annotation JSON) found anywhere under ``root``.

    The caption of a video is one of its annotated sentences, chosen with a generator seeded by ``seed`` and the
    video id (the same choice whatever the order of the file).
    """
    root, annotations = Path(root), Path(annotations)
    if not root.is_dir():
        raise UserError(f"MSR-VTT folder not found: '{root}' (pass --root, the folder holding video7010.mp4 ...)")
    if not annotations.is_file():
        raise UserError(f"annotation file not found: '{annotations}' (pass --annotations test_videodatainfo.json)")
    test_ids, captions = _msrvtt_annotations(annotations)
    files = {p.stem: p for p in _videos_under(root)}
    entries, missing, uncaptioned = [], 0, 0
    for video_id in sorted(test_ids, key=lambda v: (len(v), v)):
        if video_id not in files:
            missing += 1
            continue
        options = sorted(captions.get(video_id, []))
        if not options:
            uncaptioned += 1
            continue
        rng = np.random.default_rng([seed, zlib.crc32(video_id.encode())])
        entries.append((files[video_id], options[int(rng.integers(len(options)))][1]))
    if not entries:
        raise UserError(f"none of the {len(test_ids)} test videos of '{annotations}' is under '{root}' "
                        f"(expected files like {test_ids[0]}.mp4)")
    rows, unreadable = _index_rows(entries, out, progress)
    write_table(rows, out, columns=INDEX_COLUMNS)
    return {"videos": len(rows), "missing": missing, "without_caption": uncaptioned, "unreadable": unreadable}


__all__ = ["MAKE_INDEX_KINDS", "SOURCE_VIDEO_EXTENSIONS", "make_msrvtt_index", "make_ucf101_index", "probe_fps",
           "probe_record", "readable_class_name"]
