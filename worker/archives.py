"""Zip folders to bytes and back (adapters and checkpoints travel through Postgres as zips)."""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

from safetune.adapter_format import ADAPTER_FILES, TOKENIZER_FILES


def zip_dir(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def unzip_to(content: bytes, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for member in archive.namelist():
            # Archives come from our own DB, but never trust a path inside a zip.
            target = (folder / member).resolve()
            if not target.is_relative_to(root):
                raise ValueError(f"unsafe path in archive: {member}")
        archive.extractall(folder)


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def zip_adapter(adapter_dir: Path) -> bytes:
    """The two PEFT files (and the tokenizer's, when saved) go into a user-facing archive, nothing else."""
    staging = adapter_dir.parent / f".{adapter_dir.name}-export"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name in ADAPTER_FILES:
        shutil.copy2(adapter_dir / name, staging / name)
    for name in TOKENIZER_FILES:
        if (adapter_dir / name).is_file():
            shutil.copy2(adapter_dir / name, staging / name)
    try:
        return zip_dir(staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
