"""Fast content fingerprints of large files: hashes of sizes and end chunks, never of whole multi-GB files.

Two fingerprints with two jobs, kept apart because both are written into files users keep (changing either would
make old files disagree with new runs):

* :func:`checkpoint_fingerprint`: the full sha256 of one file's size and its first and last MiB. Story sidecars
  record it as the model's identity, so that a re-render can say when another checkpoint would make it differ.
* :func:`cache_fingerprint`: a short (12 hex digits) key of a file or of every file of a folder (names, sizes, end
  chunks). The metrics name their caches with it (weights, videos, input images) and the benchmark records its
  index and checkpoint with it to refuse a resume with other inputs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

END_CHUNK = 1 << 20  # bytes hashed from each end of a file (hashing a 10 GB checkpoint whole takes a minute)
CACHE_KEY_LENGTH = 12  # hex digits of a cache fingerprint


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """sha256 (64 hex digits) of one file's size and its first and last MiB (catches re-saved files)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(END_CHUNK))
        f.seek(max(size - END_CHUNK, 0))
        digest.update(f.read(END_CHUNK))
    return digest.hexdigest()


def cache_fingerprint(path: str | os.PathLike) -> str:
    """A short key (12 hex digits) of a file, or of a folder's files: sha256 of names, sizes and end chunks."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with open(file, "rb") as f:
            digest.update(f.read(END_CHUNK))
            if size > END_CHUNK:
                f.seek(max(size - END_CHUNK, END_CHUNK))
                digest.update(f.read())
    return digest.hexdigest()[:CACHE_KEY_LENGTH]


__all__ = ["cache_fingerprint", "checkpoint_fingerprint"]
