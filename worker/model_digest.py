"""A content hash of a base-model folder, cheap enough to take on every job.

The base-evaluation cache is keyed by it, so a rebuilt model (a new `safetune safety-align`, a new
conversion) misses the cache instead of reusing the old model's answers. Hashing every byte of a
model on every job would cost seconds to minutes, so the digest is kept in a sidecar file next to
the folder together with the folder's stat signature (relative path, size, mtime and inode of each
file): while the signature matches, the cached digest is returned after one stat per file; anything
that rewrites a file (a rebuild publishes a new folder) changes the signature and the content is
hashed again, once. The digest itself is of the content, so it is the same on every machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CHUNK_BYTES = 1024 * 1024
MARKER = "config.json"  # the model store treats a folder with this file as built


def _files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*") if p.is_file())


def _signature(model_dir: Path, files: list[Path]) -> str:
    rows = []
    for path in files:
        st = path.stat()
        rows.append([path.relative_to(model_dir).as_posix(), st.st_size, st.st_mtime_ns, st.st_ino])
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _content_hash(model_dir: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(model_dir).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def sidecar_path(model_dir: Path) -> Path:
    return model_dir.parent / f".{model_dir.name}.digest.json"


def model_digest(model_dir: Path) -> str | None:
    """sha256 of every file (path and bytes) under ``model_dir``; None while it is not built."""
    if not (model_dir / MARKER).is_file():
        return None
    files = _files(model_dir)
    signature = _signature(model_dir, files)
    sidecar = sidecar_path(model_dir)
    try:
        cached = json.loads(sidecar.read_text())
        if cached.get("signature") == signature and isinstance(cached.get("sha256"), str):
            return str(cached["sha256"])
    except (OSError, ValueError, AttributeError):
        pass  # no sidecar yet, or a damaged one: hash the content
    digest = _content_hash(model_dir, files)
    # Only a folder that did not change while it was read gets its digest remembered.
    if _signature(model_dir, _files(model_dir)) == signature:
        tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({"signature": signature, "sha256": digest}))
            os.replace(tmp, sidecar)
        except OSError:
            tmp.unlink(missing_ok=True)  # a read-only cache still works, it just hashes every time
    return digest
