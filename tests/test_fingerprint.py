"""The two file fingerprints: what each hashes (both are stored in users' files: their definitions must not drift)."""

import hashlib

import numpy as np

from dynamicrafter.fingerprint import END_CHUNK, cache_fingerprint, checkpoint_fingerprint


def test_checkpoint_fingerprint_hashes_size_and_both_ends(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 2 * END_CHUNK + 1000, dtype=np.uint8).tobytes()
    path = tmp_path / "model.ckpt"
    path.write_bytes(data)
    expected = hashlib.sha256(str(len(data)).encode() + data[:END_CHUNK] + data[-END_CHUNK:]).hexdigest()
    assert checkpoint_fingerprint(path) == expected
    small = tmp_path / "small.bin"
    small.write_bytes(data[:100])  # shorter than a chunk: read from the start twice
    assert checkpoint_fingerprint(small) == hashlib.sha256(b"100" + data[:100] * 2).hexdigest()
    middle = bytearray(data)
    middle[END_CHUNK + 500] ^= 1  # the middle is not hashed (speed); the ends and the size are
    path.write_bytes(bytes(middle))
    assert checkpoint_fingerprint(path) == expected
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert checkpoint_fingerprint(path) != expected


def test_cache_fingerprint_keys_a_file_or_a_folder(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, END_CHUNK + 300, dtype=np.uint8).tobytes()
    (tmp_path / "w").mkdir()
    path = tmp_path / "w" / "b.bin"
    path.write_bytes(data)
    # the tail after the first chunk, not overlapping it
    expected = hashlib.sha256(f"b.bin:{len(data)}".encode() + data).hexdigest()[:12]
    assert cache_fingerprint(path) == expected
    (tmp_path / "w" / "a.txt").write_bytes(b"hello")
    folder = hashlib.sha256(b"a.txt:5hello" + f"b.bin:{len(data)}".encode() + data).hexdigest()[:12]
    assert cache_fingerprint(tmp_path / "w") == folder
    path.rename(tmp_path / "w" / "c.bin")  # names are part of the key
    assert cache_fingerprint(tmp_path / "w") != folder
