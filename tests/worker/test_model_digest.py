"""The model folder's content digest: what the base-evaluation cache is keyed by."""

from __future__ import annotations

import json
import os
from pathlib import Path

from worker.model_digest import model_digest, sidecar_path


def build(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_a_folder_that_is_not_built_has_no_digest(tmp_path: Path) -> None:
    assert model_digest(tmp_path / "missing") is None
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.safetensors").write_bytes(b"w")
    assert model_digest(tmp_path / "half") is None  # no config.json yet: the store is still building it


def test_the_digest_is_of_the_content_so_equal_folders_agree(tmp_path: Path) -> None:
    first = model_digest(build(tmp_path / "a" / "m", b"weights-1"))
    second = model_digest(build(tmp_path / "b" / "m", b"weights-1"))
    assert first is not None and first == second  # another machine's copy shares the cache


def test_a_rebuilt_folder_gets_a_new_digest(tmp_path: Path) -> None:
    folder = build(tmp_path / "m", b"weights-1")
    before = model_digest(folder)
    (folder / "model.safetensors").write_bytes(b"weights-2")
    assert model_digest(folder) != before


def test_an_unchanged_folder_is_not_read_again(tmp_path: Path) -> None:
    """The sidecar's stat signature is trusted: one stat per file instead of reading every byte."""
    folder = build(tmp_path / "m", b"weights-1")
    digest = model_digest(folder)
    assert json.loads(sidecar_path(folder).read_text())["sha256"] == digest
    weights = folder / "model.safetensors"
    st = weights.stat()
    # Same size, same mtime, same inode: only a content read could tell, and none happens.
    with weights.open("r+b") as handle:
        handle.write(b"WEIGHTS-1")
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert model_digest(folder) == digest
    # A damaged sidecar is ignored, not trusted.
    sidecar_path(folder).write_text("{not json")
    assert model_digest(folder) not in (None, digest)
