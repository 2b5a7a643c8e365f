"""sha256 of files (weights, checkpoints), remembered per process: hashing a 500 MB file takes seconds."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, cached by (real path, size, modification time)."""
    real = Path(path).resolve()
    st = real.stat()
    key = (str(real), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        digest = hashlib.sha256()
        with open(real, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
        _CACHE[key] = digest.hexdigest()
    return _CACHE[key]
